// Mocha's spec reporter, closing with a plain "N passed, N failed" line that CI recognises as a test summary.
'use strict';
const {reporters} = require('mocha');

class SpecWithTotals extends reporters.Spec {
  constructor(runner, options) {
    super(runner, options);
    runner.once('end', () => {
      const {passes, failures, pending} = this.stats;
      console.log(`mocha: ${passes} passed, ${failures} failed, ${pending} skipped`);
    });
  }
}

module.exports = SpecWithTotals;
