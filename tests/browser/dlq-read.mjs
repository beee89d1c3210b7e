// A poison event is in dead letters with its error; a read session sees
// it, its replay and discard buttons are disabled, and the request it
// could still send (the form, enabled by hand) is refused with 403.
import { URL, EXPECT, check, equal, login, main, shot, env } from './lib.mjs';

await main(async (browser) => {
  const { page } = await login(browser, env('READ_TOKEN'));
  await page.getByRole('navigation', { name: 'Sections' }).getByRole('link', { name: 'Dead letters' }).click();
  const row = page.locator(`tr[data-dead-letter="${EXPECT.id}"]`);
  await row.waitFor();
  check((await row.innerText()).includes(EXPECT.error), `the list shows the error ${EXPECT.error}`);
  check((await row.innerText()).includes('work_item.poison'), 'the list shows the type');
  await shot(page, 'dead-letters');

  await row.getByRole('link').first().click();
  await page.waitForURL(`${URL}/ui/dlq/${EXPECT.id}`);
  equal((await page.locator('pre.error-text').innerText()).trim(), EXPECT.error, 'the detail page shows the error');
  check((await page.locator('pre.json').innerText()).includes('<b>not bold</b>'), 'the envelope is shown as text');
  equal(await page.locator('main b').count(), 0, 'event data is not markup');
  const replay = page.getByRole('button', { name: 'Replay this dead letter' });
  const discard = page.getByRole('button', { name: 'Discard' });
  check(await replay.isDisabled(), 'replay is disabled for a read session');
  check(await discard.isDisabled(), 'discard is disabled for a read session');
  await shot(page, 'dead-letter-read-only');

  // The dry run is reading: allowed, and its replay button disabled too.
  await page.goto(`${URL}/ui/dlq/preview?do=replay-selected&id=${EXPECT.id}`);
  check((await page.locator('[data-k="preview-count"]').innerText()).startsWith('1 dead letter'), 'the preview counts it');
  const act = page.getByRole('button', { name: 'Replay 1 dead letter' });
  check(await act.isDisabled(), 'the preview replay button is disabled for a read session');

  // Enabled by hand, the form is refused by the server.
  await act.evaluate((b) => { b.disabled = false; b.removeAttribute('aria-disabled'); });
  const [answer] = await Promise.all([page.waitForResponse((r) => r.url().endsWith('/ui/dlq/replay')), act.click()]);
  equal(answer.status(), 403, 'POST /ui/dlq/replay with a read session');
  check((await page.locator('main').innerText()).includes('may only read'), 'the refusal says why');

  // And from a script in the page (same origin, its cookie, a valid CSRF token).
  await page.goto(`${URL}/ui/dlq/${EXPECT.id}`);
  const status = await page.evaluate(async (id) => {
    const csrf = document.querySelector('input[name=csrf]').value;
    const res = await fetch('/ui/dlq/discard', { method: 'POST', body: new URLSearchParams({ csrf, id }) });
    return res.status;
  }, EXPECT.id);
  equal(status, 403, 'POST /ui/dlq/discard with a read session');
  await page.reload();
  check((await page.locator('dl.facts').innerText()).includes('new'), 'the dead letter is still new');
});
