import {expect} from 'chai'

import {UnavailableError} from '../src/lib/errors.js'
import {pollUntil} from '../src/lib/poll.js'
import {expectRejects} from './helpers/rejects.js'

describe('pollUntil', () => {
  it('resolves with the first value that is not undefined, null or false, checking every intervalMs', async () => {
    const answers = [undefined, null, false, 0]
    let checks = 0
    const started = Date.now()
    const value = await pollUntil(() => answers[checks++], {timeoutMs: 1000, intervalMs: 10})
    expect(value).to.equal(0)
    expect(checks).to.equal(4)
    expect(Date.now() - started).to.be.within(25, 1000)
  })

  it('awaits an async check and resolves at once when the first check holds', async () => {
    const started = Date.now()
    expect(await pollUntil(async () => 'found', {timeoutMs: 1000, intervalMs: 500})).to.equal('found')
    expect(Date.now() - started).to.be.below(100)
  })

  it('rejects after timeoutMs with an UnavailableError naming what it waited for, checking once more at the bound', async () => {
    let checks = 0
    const started = Date.now()
    const error = await expectRejects(pollUntil(() => (checks++, undefined), {timeoutMs: 200, intervalMs: 70, what: 'the tun device'}), UnavailableError)
    const elapsed = Date.now() - started
    expect(error.message).to.equal('timed out after 0.2s waiting for the tun device')
    expect(elapsed).to.be.within(200, 1000)
    expect(checks).to.be.within(2, 4) // at 0, 70, 140 and 200 ms on an idle machine; the last one at the bound
  })

  it("settles as onTimeout says: the caller's own error, or a value", async () => {
    class Custom extends Error {}
    await expectRejects(
      pollUntil(() => false, {
        timeoutMs: 30,
        onTimeout: () => {
          throw new Custom('gone')
        },
      }),
      Custom,
    )
    expect(await pollUntil(() => false, {timeoutMs: 30, intervalMs: 10, onTimeout: () => 'gave up'})).to.equal('gave up')
  })

  it('ends the wait with the error of a check that throws', async () => {
    const error = await expectRejects(pollUntil(() => Promise.reject(new RangeError('broken')), {timeoutMs: 1000}), RangeError)
    expect(error.message).to.equal('broken')
  })

  it('stops within its interval when the signal aborts, rejecting with the reason, and at once when aborted already', async () => {
    const stop = new AbortController()
    const reason = new Error('stopped')
    setTimeout(() => stop.abort(reason), 50)
    const started = Date.now()
    let checks = 0
    const rejected = await pollUntil(() => (checks++, undefined), {timeoutMs: 5000, intervalMs: 1000, signal: stop.signal}).catch((error: unknown) => error)
    expect(rejected).to.equal(reason)
    expect(Date.now() - started).to.be.below(500)
    expect(checks).to.equal(1)
    checks = 0
    expect(await pollUntil(() => ++checks, {timeoutMs: 1000, signal: stop.signal}).catch((error: unknown) => error)).to.equal(reason)
    expect(checks).to.equal(0)
  })
})
