// An admin session filters the dead letters by type, previews the replay
// (a dry run: its count and list), replays them at a chosen rate, follows
// the progress, and sees them handled by their group; the others stay.
import { URL, EXPECT, check, equal, login, main, number, shot, env } from './lib.mjs';

await main(async (browser) => {
  const { page } = await login(browser, env('ADMIN_TOKEN'));
  check(await page.getByText('admin session').isVisible(), 'the session is shown as admin');
  await page.goto(`${URL}/ui/dlq`);
  equal(await page.locator('tr[data-dead-letter]').count(), EXPECT.count + 2, 'all dead letters are listed');
  await page.getByLabel('Event type').fill(EXPECT.type);
  await page.getByLabel('Error class').selectOption('permanent');
  await page.getByRole('button', { name: 'Filter', exact: true }).click();
  await page.waitForURL(/type=/);
  const rows = page.locator('tr[data-dead-letter]');
  equal(await rows.count(), EXPECT.count, `dead letters of ${EXPECT.type}`);
  for (const text of await rows.allInnerTexts()) check(text.includes(EXPECT.type), `row of another type: ${text}`);

  await page.getByRole('button', { name: 'Preview replay of all matching the filter' }).click();
  await page.waitForURL(/\/ui\/dlq\/preview/);
  equal(number(await page.locator('[data-k="preview-count"]').innerText()), EXPECT.count, 'the dry run counts them');
  equal(await page.locator('tr[data-dead-letter]').count(), EXPECT.count, 'the dry run lists them');
  // A dry run changes nothing.
  const still = await (await fetch(`${URL}/v1/dlq?type=${EXPECT.type}&status=new`, { headers: { authorization: `Bearer ${env('READ_TOKEN')}` } })).json();
  equal(still.dead_letters.length, EXPECT.count, 'still new after the dry run');
  await shot(page, 'replay-preview');

  await page.getByLabel('Rate (events per second)').fill(String(EXPECT.rate));
  const started = Date.now();
  await page.getByRole('button', { name: `Replay ${EXPECT.count} dead letters` }).click();
  await page.waitForURL(/\/ui\/dlq\/replays\//);
  // Progress, refreshed in place, until finished.
  await page.waitForFunction((n) => document.querySelector('[data-k="progress"]').textContent === `${n} of ${n}` && document.querySelector('[data-k="state"]').textContent === 'finished', EXPECT.count, { timeout: 30000 });
  const took = Date.now() - started;
  const floor = ((EXPECT.count - 1) / EXPECT.rate) * 1000;
  check(took >= floor, `${EXPECT.count} at ${EXPECT.rate}/s took ${took} ms, less than ${floor} ms`);
  check(/\d ms|\d\.\d s/.test(await page.locator('[data-k="elapsed"]').innerText()), 'the elapsed time has its unit');
  // Then handled by the group (its consumer in serve has the fix).
  await page.waitForFunction(() => {
    const v = document.querySelector('[data-k="verdict"]');
    return v && v.textContent.startsWith('Handled');
  }, null, { timeout: 45000 });
  check((await page.locator('[data-k="rs:billing"]').innerText()).includes('lag 0 entries, pending 0 entries'), 'the replay stream is drained');
  await shot(page, 'replay-handled');

  await page.goto(`${URL}/ui/dlq?type=${EXPECT.type}&status=replayed`);
  equal(await page.locator('tr[data-dead-letter]').count(), EXPECT.count, 'shown replayed');
  await page.goto(`${URL}/ui/dlq?type=${EXPECT.other_type}`);
  equal(await page.locator('tr[data-dead-letter]').count(), 2, 'the others are still waiting');
});
