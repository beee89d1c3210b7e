// A group that fell behind: its lag is shown (as the CLI counts it), it is
// named as what holds retention back, on the overview and on its page; the
// group that caught up holds nothing.
import { URL, EXPECT, check, equal, figures, login, main, number, shot, env } from './lib.mjs';

await main(async (browser) => {
  const { page } = await login(browser, env('READ_TOKEN'));
  const holders = await page.locator('[data-held] td[data-k^="holder:"]').allInnerTexts();
  check(holders.length > 0, 'the overview lists streams held back');
  check(holders.every((h) => h === EXPECT.group), `only ${EXPECT.group} holds retention back: ${holders}`);
  const ages = await page.locator('[data-held] td[data-k^="held-age:"]').allInnerTexts();
  check(ages.every((a) => /\d+(\.\d)? (ms|s|min \d+ s)$/.test(a)), `ages have units: ${ages}`);

  await page.getByRole('navigation', { name: 'Sections' }).getByRole('link', { name: 'Groups' }).click();
  await page.waitForURL(`${URL}/ui/groups`);
  const f = await figures(page);
  equal(number(f[`lag:${EXPECT.group}`]), EXPECT.lag, `lag of ${EXPECT.group}`);
  equal(number(f[`lag:${EXPECT.caught_up}`]), 0, `lag of ${EXPECT.caught_up}`);
  check(number(f[`holds:${EXPECT.group}`]) > 0, `${EXPECT.group} holds retention back on some streams`);
  equal(f[`holds:${EXPECT.caught_up}`], '0 streams', `${EXPECT.caught_up} holds nothing`);

  await page.getByRole('link', { name: EXPECT.group, exact: true }).click();
  await page.waitForURL(`${URL}/ui/groups/${EXPECT.group}`);
  equal(number(await page.locator('[data-k="lag"]').innerText()), EXPECT.lag, 'the group page shows the lag');
  const held = await page.locator('[data-held]').count();
  check(held > 0, 'the group page lists the streams it holds back');
  const partitionLags = (await page.locator('td[data-k^="lag:"]').allInnerTexts()).map(number);
  equal(partitionLags.reduce((a, b) => a + b, 0), EXPECT.lag, 'the lags per partition add up');
  await shot(page, 'lagging-group');
});
