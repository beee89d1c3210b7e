// The event browser finds an event by its id (typed, submitted with the
// keyboard), pages through its partition, and its live tail shows an
// event published after it opened.
import { URL, EXPECT, check, equal, login, main, shot, env } from './lib.mjs';

await main(async (browser) => {
  const { page } = await login(browser, env('READ_TOKEN'));
  await page.goto(`${URL}/ui/events`);
  await page.getByLabel('Find by event id or stream entry id').fill(EXPECT.id);
  await page.keyboard.press('Enter');
  await page.waitForURL(/q=/);
  check((await page.locator('[data-k="found"]').innerText()).startsWith('1 entry for'), 'one entry found');
  const row = page.locator(`tr[data-entry="${EXPECT.entry_id}"]`);
  equal(await row.count(), 1, 'the entry found is the one published');
  const text = await row.innerText();
  for (const part of [EXPECT.stream, EXPECT.type, EXPECT.key, EXPECT.id]) check(text.includes(part), `the row shows ${part}: ${text}`);
  await shot(page, 'event-found');

  // By its stream entry id too.
  await page.goto(`${URL}/ui/events?q=${EXPECT.entry_id}`);
  // Entry ids are per stream: other partitions may have one alike.
  equal(await page.locator(`tr[data-entry="${EXPECT.entry_id}"]`).filter({ hasText: EXPECT.stream }).count(), 1, 'found by entry id');

  // Its partition, page by page (XRANGE), holds it.
  const [, topic, partition] = /\{(.+):(\d+)\}$/.exec(EXPECT.stream);
  await page.goto(`${URL}/ui/events?topic=${topic}&partition=${partition}&count=5`);
  let seen = false;
  for (let i = 0; i < 20 && !seen; i++) {
    seen = (await page.locator(`tr[data-entry="${EXPECT.entry_id}"]`).filter({ hasText: EXPECT.stream }).count()) === 1;
    if (!seen) await page.getByRole('link', { name: 'newer →' }).click();
  }
  check(seen, 'paging through the partition reaches the entry');

  // Live tail: an event of the same key (same partition) appears.
  await page.goto(`${URL}/ui/events?topic=${topic}&partition=${partition}&tail=1`);
  const before = await page.locator('tbody#tail tr').count();
  const body = { type: EXPECT.type, key: EXPECT.key, data: { id: EXPECT.key, kind: 'tail', title: 'tailed', status: 'pending', requested_by: 'ui', created_at: '2026-11-28T09:00:00Z' } };
  const res = await fetch(`${URL}/v1/events?direct=true`, {
    method: 'POST',
    headers: { authorization: `Bearer ${env('ADMIN_TOKEN')}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  equal(res.status, 201, `publishing through the API: ${await res.clone().text()}`);
  const published = (await res.json()).events[0];
  if (published.stream === EXPECT.stream) {
    await page.locator(`tr[data-entry="${published.entry_id}"]`).waitFor({ timeout: 10000 });
    check((await page.locator('tbody#tail tr').count()) === before + 1, 'one row was added');
    await shot(page, 'events-tail');
  } else {
    throw new Error(`the tail event went to ${published.stream}, not ${EXPECT.stream}`);
  }
});
