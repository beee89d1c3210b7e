// Log in with the read token: the overview's lengths, pending, lag and
// consumers equal `eventbus streams --json` (EXPECT), the page fits a
// phone's width, and the figures refresh in place (no reload) when an
// event is published.
import { URL, EXPECT, check, equal, figures, fitsWidth, login, main, number, shot, env } from './lib.mjs';

await main(async (browser) => {
  const { page } = await login(browser, env('READ_TOKEN'));
  check(await page.getByText('read-only session').isVisible(), 'the session is shown read-only');
  let f = await figures(page);
  let compared = 0;
  for (const s of EXPECT.streams) {
    equal(number(f[`len:${s.stream}`]), s.length, `length of ${s.stream}`);
    check(/entr(y|ies)$/.test(f[`len:${s.stream}`]), `length of ${s.stream} has its unit: ${f[`len:${s.stream}`]}`);
    compared++;
    for (const g of s.groups) {
      const k = `${s.stream}|${g.name}`;
      equal(number(f[`pending:${k}`]), g.pending, `pending of ${k}`);
      equal(f[`lag:${k}`] === 'unknown' ? null : number(f[`lag:${k}`]), g.lag, `lag of ${k}`);
      equal(number(f[`consumers:${k}`]), g.consumers, `consumers of ${k}`);
      compared += 3;
    }
  }
  check(EXPECT.streams.length > 0 && compared > EXPECT.streams.length, 'something was compared');
  check((await page.locator('main').innerText()).includes('Redis memory'), 'Redis memory is shown');
  await shot(page, 'overview');

  // Live refresh: publish one event through the API; the length cell
  // changes without the page being loaded again.
  await page.evaluate(() => { window.__notReloaded = true; });
  const res = await fetch(`${URL}/v1/events?direct=true`, {
    method: 'POST',
    headers: { authorization: `Bearer ${env('ADMIN_TOKEN')}`, 'content-type': 'application/json' },
    body: JSON.stringify({ type: 'system.health_check', key: 'live-refresh', data: { component: 'live-refresh', status: 'healthy', checks: {}, checked_at: '2026-11-28T09:00:00Z' } }),
  });
  equal(res.status, 201, 'publishing through the API');
  const stream = (await res.json()).events[0].stream;
  const before = EXPECT.streams.find((s) => s.stream === stream).length;
  const cell = page.locator(`[data-k="len:${stream}"]`);
  const box = await cell.boundingBox();
  await page.waitForFunction(([k, n]) => {
    const el = document.querySelector(`[data-k="${k}"]`);
    return el !== null && el.textContent.startsWith(`${n + 1} `);
  }, [`len:${stream}`, before], { timeout: 10000 });
  check(await page.evaluate(() => window.__notReloaded === true), 'the page was updated in place, not reloaded');
  const after = await cell.boundingBox();
  equal(Math.round(after.y), Math.round(box.y), 'the length cell did not move (no layout shift)');
  check((await page.locator('#live-status').innerText()).startsWith('updated'), 'the refresh is announced');

  // A phone's width: everything reachable without sideways scrolling of the page.
  await page.setViewportSize({ width: 390, height: 844 });
  await page.reload();
  await fitsWidth(page);
  await shot(page, 'overview-phone');
});
