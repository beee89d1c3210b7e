// Shared by the console's browser specs: launch Debian's Chromium through
// playwright-core, log in, read the figures of a page, save screenshots.
// Each spec exits 0 when every check holds, 1 with the reason otherwise.
import { chromium } from 'playwright-core';

export function env(name) {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set (the specs are run by crates/eventbus-server/tests/ui.rs)`);
  return v;
}

export const URL = env('CONSOLE_URL');
export const EXPECT = JSON.parse(env('EXPECT'));

export function check(ok, message) {
  if (!ok) throw new Error(`check failed: ${message}`);
}

export function equal(actual, expected, what) {
  check(actual === expected, `${what}: expected ${JSON.stringify(expected)}, got ${JSON.stringify(actual)}`);
}

/** The number in "1,234 entries", "lag 3 entries"; null for "unknown". */
export function number(text) {
  const m = /(-?[\d,]+(?:\.\d+)?)/.exec(text);
  return m ? Number(m[1].replace(/,/g, '')) : null;
}

export async function launch() {
  return chromium.launch({
    executablePath: env('CHROMIUM'),
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--no-first-run'],
  });
}

/**
 * A new browser context logged in with `token`, by keyboard only: Tab to
 * the token field, type, Enter.
 */
export async function login(browser, token, viewport = { width: 1280, height: 900 }) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  page.on('pageerror', (e) => { throw new Error(`script error on ${page.url()}: ${e.message}`); });
  // The login page itself answers 401: only other failures are worth a line.
  page.on('console', (m) => {
    if (m.type() === 'error' && !m.text().includes('status of 401')) console.error(`console error on ${page.url()}: ${m.text()}`);
  });
  const first = await page.goto(`${URL}/ui`);
  equal(first.status(), 401, 'GET /ui without a session');
  check(await page.locator('form.login input[name=token]').isVisible(), 'the token form is shown');
  // The field has the focus (autofocus) or is reached with Tab.
  for (let i = 0; i < 6 && (await page.evaluate(() => document.activeElement && document.activeElement.id)) !== 'token'; i++) {
    await page.keyboard.press('Tab');
  }
  equal(await page.evaluate(() => document.activeElement.id), 'token', 'the token field takes the keyboard focus');
  await page.keyboard.type(token);
  // The form posts to /ui/login, which sends the browser back to /ui.
  await Promise.all([
    page.waitForResponse((r) => r.url() === `${URL}/ui` && r.request().method() === 'GET' && r.status() === 200),
    page.keyboard.press('Enter'),
  ]);
  await page.getByRole('heading', { name: 'Overview' }).waitFor();
  const cookies = await context.cookies();
  const session = cookies.find((c) => c.name === 'eventbus_console');
  check(session, 'a session cookie is set');
  check(session.httpOnly, 'the session cookie is HttpOnly');
  equal(session.sameSite, 'Strict', 'the session cookie SameSite');
  check(!session.value.includes(token), 'the cookie does not hold the token');
  check(!(await page.content()).includes(token), 'the page does not show the token');
  return { context, page };
}

/** Every figure on the page, `data-k` → text. */
export async function figures(page) {
  return page.$$eval('[data-k]', (els) => Object.fromEntries(els.map((e) => [e.getAttribute('data-k'), e.textContent.trim()])));
}

export async function shot(page, name) {
  const path = `${env('SCREENSHOT_DIR')}/console-${name}.png`;
  await page.screenshot({ path, fullPage: true });
  console.log(`screenshot ${path}`);
}

/** No horizontal scrolling of the page itself (tables scroll in their box). */
export async function fitsWidth(page) {
  const { scroll, width } = await page.evaluate(() => ({ scroll: document.documentElement.scrollWidth, width: window.innerWidth }));
  check(scroll <= width + 1, `page is ${scroll}px wide in a ${width}px window`);
}

export async function main(spec) {
  const browser = await launch();
  try {
    await spec(browser);
    console.log('ok');
  } catch (e) {
    console.error(e.stack || String(e));
    process.exitCode = 1;
  } finally {
    await browser.close();
  }
}
