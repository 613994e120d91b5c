// Mocha's spec reporter, closing with a plain "N passed, N failed, N skipped" line that CI recognises as a
// test summary. With VIDSYNC_TEST_TOTALS=FILE the totals go to that file (JSON) instead: scripts/test sums
// its runs into one closing line. With VIDSYNC_TEST_TIMINGS=FILE it also writes each file's wall time
// there (JSON), to see where a run's time goes.
'use strict';
const {writeFileSync} = require('node:fs');
const {relative} = require('node:path');
const {reporters} = require('mocha');

class SpecWithTotals extends reporters.Spec {
  constructor(runner, options) {
    super(runner, options);
    const timingsFile = process.env.VIDSYNC_TEST_TIMINGS;
    const fileStarted = new Map();
    const fileSeconds = {};
    if (timingsFile) {
      runner.on('suite', (suite) => {
        if (suite.file && !fileStarted.has(suite.file)) fileStarted.set(suite.file, Date.now());
      });
      runner.on('suite end', (suite) => {
        if (suite.file && suite.parent?.root) {
          const file = relative(process.cwd(), suite.file);
          fileSeconds[file] = (fileSeconds[file] ?? 0) + (Date.now() - fileStarted.get(suite.file)) / 1000;
          fileStarted.delete(suite.file);
        }
      });
    }
    runner.once('end', () => {
      const {passes, failures, pending} = this.stats;
      if (timingsFile) writeFileSync(timingsFile, JSON.stringify(fileSeconds, null, 2));
      const totalsFile = process.env.VIDSYNC_TEST_TOTALS;
      if (totalsFile) writeFileSync(totalsFile, JSON.stringify({passed: passes, failed: failures, skipped: pending}));
      else console.log(`${passes} passed, ${failures} failed, ${pending} skipped`);
    });
  }
}

module.exports = SpecWithTotals;
