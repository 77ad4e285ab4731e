// Browser tests of the embedded web UI: starts the real `tern serve` binary
// on a temporary data dir (ports 0), sends a trace, logs and metrics with
// the OpenTelemetry Python SDK (tests/python/ui_seed.py), then drives
// headless Chromium (playwright-core, Debian's /usr/bin/chromium) through
// the services, the trace waterfall, its logs, a log search, a PromQL chart,
// the SQL tab, the alerts (rules imported over HTTP, a silence created and
// expired in the UI, the history) and an SLO with its burn-down, saving a
// screenshot of each page.
//
//   node --test web/tests/ui.test.mjs    (after `cargo build`)
//
// UI_TEST_BIN: the binary (default $CARGO_TARGET_DIR/debug/tern, else
// target/debug/tern); CHROMIUM: the browser (default /usr/bin/chromium);
// UI_TEST_ARTIFACTS: where screenshots go (default
// $CARGO_TARGET_DIR/ui-artifacts, else target/ui-artifacts). The server
// gets no TERN_* variables of the caller (they are its configuration).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFile } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const repo = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const target = process.env.CARGO_TARGET_DIR ? resolve(process.env.CARGO_TARGET_DIR) : join(repo, 'target');
const bin = process.env.UI_TEST_BIN ?? join(target, 'debug', 'tern');
const browserPath = process.env.CHROMIUM ?? '/usr/bin/chromium';
const artifacts = process.env.UI_TEST_ARTIFACTS ?? join(target, 'ui-artifacts');
const TIMEOUT = 20_000;

const haveBrowser = existsSync(browserPath);
if (!haveBrowser) console.log(`SKIPPED browser tests: no Chromium at ${browserPath} (scripts/setup.sh test installs it)`);

let server, dataDir, base, otlpBase, browser, page, sent;
const pageErrors = [];
const failedRequests = [];

function startServer() {
  assert.ok(existsSync(bin), `no tern binary at ${bin}: run cargo build first (or set UI_TEST_BIN)`);
  dataDir = mkdtempSync(join(tmpdir(), 'tern-ui-'));
  const child = spawn(
    bin,
    ['serve', '--data-dir', dataDir, '--http-addr', '127.0.0.1:0', '--otlp-grpc-addr', '127.0.0.1:0', '--otlp-http-addr', '127.0.0.1:0', '--set', 'log.format=json', '--log-level', 'info'],
    { stdio: ['ignore', 'ignore', 'pipe'], env: Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('TERN_') && k !== 'RUST_LOG')) },
  );
  const log = [];
  return new Promise((ok, fail) => {
    const timer = setTimeout(() => fail(new Error(`tern did not get ready within 30 s:\n${log.join('\n')}`)), 30_000);
    child.on('exit', (code) => fail(new Error(`tern exited with ${code} before it was ready:\n${log.join('\n')}`)));
    createInterface({ input: child.stderr }).on('line', (line) => {
      if (log.length < 200) log.push(line);
      let v;
      try {
        v = JSON.parse(line);
      } catch {
        return;
      }
      if (v.fields?.message === 'tern is ready') {
        clearTimeout(timer);
        ok({ child, http: v.fields.http, otlpHttp: v.fields.otlp_http, grpc: v.fields.otlp_grpc });
      }
    });
  });
}

function sendTelemetry(otlpHttp, grpc) {
  const script = join(repo, 'tests/python/ui_seed.py');
  return new Promise((ok, fail) =>
    execFile(process.env.PYTHON ?? 'python3', [script, '--http', `http://${otlpHttp}`, '--grpc', grpc], { timeout: 60_000 }, (err, stdout, stderr) => {
      if (err) return fail(new Error(`ui_seed.py failed: ${err.message}\n${stderr}`));
      const last = stdout.trim().split('\n').pop();
      ok(JSON.parse(last));
    }),
  );
}

async function waitFor(what, f, ms = TIMEOUT) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

async function shot(name) {
  const p = join(artifacts, `${name}.png`);
  await page.screenshot({ path: p, fullPage: true });
  console.log(`screenshot: ${p}`);
}

before(async () => {
  if (!haveBrowser) return;
  mkdirSync(artifacts, { recursive: true });
  const s = await startServer();
  server = s.child;
  base = `http://${s.http}`;
  otlpBase = `http://${s.otlpHttp}`;
  sent = await sendTelemetry(s.otlpHttp, s.grpc);
  assert.equal(sent.ok, true, 'the SDK flushed everything');
  // The stores apply batches asynchronously after the acknowledgement.
  await waitFor('the trace in the store', async () => (await fetch(`${base}/api/v1/traces/${sent.trace_id}`)).ok);
  await waitFor('the logs in the store', async () => {
    const r = await (await fetch(`${base}/api/v1/logs/trace/${sent.trace_id}`)).json();
    return r.records?.length >= 3;
  });
  await waitFor('the metric in the store', async () => {
    const r = await (await fetch(`${base}/api/v1/query?query=ui_requests_total`)).json();
    return r.data?.result?.length >= 2;
  });
  browser = await chromium.launch({ executablePath: browserPath, args: ['--no-sandbox', '--disable-dev-shm-usage'] });
  page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  page.setDefaultTimeout(TIMEOUT);
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  // Failed requests show up as console errors too; they are checked below by URL.
  page.on('console', (m) => m.type() === 'error' && !m.text().startsWith('Failed to load resource') && pageErrors.push(m.text()));
  page.on('response', (r) => r.status() >= 400 && failedRequests.push(`${r.status()} ${new URL(r.url()).pathname}`));
});

after(async () => {
  await browser?.close();
  if (server && server.exitCode === null) {
    const exited = new Promise((r) => server.once('exit', r));
    server.kill('SIGTERM');
    await Promise.race([exited, new Promise((r) => setTimeout(r, 10_000))]);
    if (server.exitCode === null) server.kill('SIGKILL');
  }
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
});

const t = haveBrowser ? test : test.skip;

/** A sub-test that saves a screenshot and the page's text when it fails. */
function step(ctx, name, f) {
  return ctx.test(name, async () => {
    try {
      await f();
    } catch (e) {
      const p = join(artifacts, `FAILED-${name.replace(/[^a-z0-9]+/gi, '-')}.png`);
      await page.screenshot({ path: p, fullPage: true }).catch(() => {});
      const text = await page.evaluate(() => document.body.innerText).catch(() => '?');
      console.log(`failed at ${page.url()} (screenshot ${p}); page text:\n${text.slice(0, 2000)}`);
      throw e;
    }
  });
}

t('the UI', async (ctx) => {
  await step(ctx, 'serves the app shell quickly and paints within a second', async () => {
    const start = Date.now();
    await page.goto(`${base}/`);
    await page.getByText('Services', { exact: true }).first().waitFor();
    const fcp = await page.evaluate(() => performance.getEntriesByName('first-contentful-paint')[0]?.startTime ?? null);
    console.log(`first contentful paint: ${fcp === null ? 'n/a' : fcp.toFixed(0) + ' ms'}; shell ready after ${Date.now() - start} ms`);
    assert.ok(fcp !== null && fcp < 1000, `first contentful paint ${fcp} ms`);
  });

  await step(ctx, 'lists the services with RED figures and draws the service map', async () => {
    const table = page.getByTestId('services-table');
    await table.getByText('ui-frontend').waitFor();
    await table.getByText('ui-checkout').waitFor();
    const row = table.locator('tr', { hasText: 'ui-checkout' });
    // One request, and it failed.
    assert.match(await row.innerText(), /100\.0%/);
    const map = page.getByTestId('service-map');
    await map.locator('text.node-label', { hasText: 'ui-frontend' }).waitFor();
    await map.locator('text.node-label', { hasText: 'ui-checkout' }).waitFor();
    assert.equal(await map.locator('path.edge').count(), 1);
    await shot('01-services');
  });

  await step(ctx, 'opens a service page with its operations', async () => {
    await page.getByTestId('services-table').getByText('ui-checkout').click();
    await page.waitForURL(/\/services\/ui-checkout/);
    const ops = page.getByTestId('operations-table');
    await ops.getByText('charge card').waitFor();
    await ops.getByText('process order').waitFor();
    await shot('02-service');
  });

  await step(ctx, 'finds the trace and opens its waterfall', async () => {
    await page.getByRole('link', { name: 'Traces of ui-checkout' }).click();
    await page.waitForURL(/\/traces\?.*service=ui-checkout/);
    const results = page.getByTestId('trace-results');
    await results.getByText('GET /checkout').waitFor();
    assert.equal(await page.getByTestId('trace-scatter').locator('circle').count(), 1);
    await shot('03-traces');
    // Attribute filters: one that matches the root span, one that matches nothing.
    const form = page.getByTestId('trace-search');
    await form.locator('select[name=service]').selectOption('');
    await page.waitForURL((u) => !u.search.includes('service='));
    await page.getByTestId('trace-search').locator('input[name=attr]').fill('http.route=/nope');
    await page.getByTestId('trace-search').getByRole('button', { name: 'Search' }).click();
    await page.getByText('No traces match in this time range').waitFor();
    await page.getByTestId('trace-search').locator('input[name=attr]').fill('http.route=/checkout');
    await page.getByTestId('trace-search').getByRole('button', { name: 'Search' }).click();
    await page.waitForURL(/attr=http.route%3D%2Fcheckout/);
    await page.getByTestId('trace-results').getByText('GET /checkout').waitFor();
    await page.getByTestId('trace-results').getByTestId('trace-link').first().click();
    await page.waitForURL(new RegExp(`/traces/${sent.trace_id}`));
    await page.getByTestId('trace-title').getByText('ui-frontend: GET /checkout').waitFor();
    const rows = page.getByTestId('span-row');
    await waitFor('four span rows', async () => (await rows.count()) === 4);
    // Depth-first order: root, client call, the callee's server span, its child.
    const names = await rows.locator('.op').allInnerTexts();
    assert.deepEqual(names, ['GET /checkout', 'POST checkout', 'process order', 'charge card']);
    // Each span runs inside its parent one after the other: all four are on the critical path.
    assert.equal(await page.locator('.wf-bar.critical').count(), 4);
    // Span details with the exception event.
    await rows.filter({ hasText: 'charge card' }).click();
    const details = page.getByTestId('span-details');
    await details.getByText('card declined by issuer').waitFor();
    await details.getByText('ValueError').first().waitFor();
    await details.getByText('web-1').waitFor(); // resource host.name
    await shot('04-trace');
    // Collapsing the root hides its descendants.
    await rows.first().locator('.twisty').click();
    await waitFor('a collapsed tree', async () => (await rows.count()) === 1);
    await rows.first().locator('.twisty').click();
    await waitFor('an expanded tree', async () => (await rows.count()) === 4);
  });

  await step(ctx, "jumps to the trace's logs and back from a log to the trace", async () => {
    await page.getByTestId('trace-logs-link').click();
    await page.waitForURL(/\/logs\?/);
    assert.equal(await page.getByTestId('log-query').inputValue(), `trace_id:${sent.trace_id}`);
    const list = page.getByTestId('log-list');
    await list.getByText('payment failed for order o-42').waitFor();
    await list.getByText('checkout request received').waitFor();
    await waitFor('three records', async () => (await page.getByTestId('log-row').count()) === 3);
    await page.getByTestId('log-histogram').locator('rect').first().waitFor();
    await shot('05-trace-logs');
    await list.getByTestId('log-trace-link').first().click();
    await page.waitForURL(new RegExp(`/traces/${sent.trace_id}`));
    await page.getByTestId('trace-title').getByText('ui-frontend: GET /checkout').waitFor();
  });

  await step(ctx, 'searches logs with the query syntax and expands a record', async () => {
    await page.getByTestId('nav-logs').click();
    await page.waitForURL(/\/logs/);
    await page.getByTestId('log-query').fill('severity:error AND service:ui-checkout');
    await page.getByTestId('log-search').click();
    await page.waitForURL(/q=severity/);
    const rows = page.getByTestId('log-row');
    // The previous results stay on screen until the new ones arrive.
    await waitFor('the one matching record', async () => (await rows.count()) === 1);
    await rows.first().getByText('payment failed for order o-42').waitFor();
    assert.match(await page.getByTestId('log-total').innerText(), /^1 matching/);
    await rows.first().locator('.log-line').click();
    await rows.first().getByText(sent.trace_id).first().waitFor();
    await shot('06-log-search');
    // A syntax error is shown, not swallowed.
    await page.getByTestId('log-query').fill('severity:error AND (');
    await page.getByTestId('log-search').click();
    await page.getByRole('alert').getByText('Invalid query', { exact: true }).waitFor();
  });

  await step(ctx, 'live-tails new records', async () => {
    await page.getByTestId('log-query').fill('service:ui-tail');
    await page.getByTestId('log-tail').click();
    await page.waitForURL(/tail=1/);
    await page.getByTestId('tail').getByText('● live').waitFor();
    // A record sent now (OTLP/HTTP JSON) appears without a reload; one of
    // another service does not.
    const now = `${Date.now()}000000`;
    const body = (service, text) => ({
      resourceLogs: [
        {
          resource: { attributes: [{ key: 'service.name', value: { stringValue: service } }] },
          scopeLogs: [{ logRecords: [{ timeUnixNano: now, severityNumber: 13, severityText: 'WARN', body: { stringValue: text } }] }],
        },
      ],
    });
    for (const [svc, text] of [['ui-other', 'not this one'], ['ui-tail', 'tailed record 7']]) {
      const r = await fetch(`${otlpBase}/v1/logs`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body(svc, text)) });
      assert.equal(r.status, 200);
    }
    await page.getByTestId('tail').getByText('tailed record 7').waitFor();
    assert.equal(await page.getByTestId('tail').getByText('not this one').count(), 0);
    await shot('07-live-tail');
    await page.getByTestId('log-tail').click();
    await page.waitForURL((u) => !u.search.includes('tail=1'));
  });

  await step(ctx, 'completes metric names and charts a PromQL query', async () => {
    await page.getByTestId('nav-metrics').click();
    await page.waitForURL(/\/explore/);
    await page.getByTestId('metric-browser').getByText('ui_requests_total').waitFor();
    const input = page.getByTestId('promql-input');
    await input.click();
    await input.pressSequentially('ui_req');
    await page.getByTestId('promql-suggestions').getByText('ui_requests_total').waitFor();
    await input.press('Tab');
    assert.equal(await input.inputValue(), 'ui_requests_total');
    await input.pressSequentially('{rou');
    await page.getByTestId('promql-suggestions').getByText('route').waitFor();
    await input.press('Tab');
    await input.pressSequentially('="/checkout"}');
    await page.getByTestId('promql-run').click();
    await page.waitForURL(/query=ui_requests_total/);
    const chart = page.getByTestId('promql-chart');
    await chart.locator('canvas').waitFor();
    const legend = await chart.locator('.u-legend').innerText();
    assert.match(legend, /route="\/checkout"/);
    assert.doesNotMatch(legend, /route="\/cart"/);
    await page.getByText('8', { exact: true }).first().waitFor(); // the last value: 5 + 3
    await shot('08-promql');
    // Stacked: both routes, the chart redrawn in stacked mode.
    await input.fill('ui_requests_total');
    await page.getByTestId('promql-run').click();
    await page.getByLabel('Stacked').check();
    await page.waitForURL(/stacked=1/);
    await page.getByTestId('promql-chart').locator('canvas').waitFor();
    const stackedLegend = await page.getByTestId('promql-chart').locator('.u-legend').innerText();
    assert.match(stackedLegend, /route="\/cart"/);
    assert.match(stackedLegend, /route="\/checkout"/);
    await page.getByLabel('Stacked').uncheck();
  });

  await step(ctx, 'runs SQL and shows its table, chart and errors', async () => {
    await page.getByTestId('tab-sql').click();
    // The default query: spans per service, from the real SQL API.
    await page.getByTestId('sql-run').click();
    await page.waitForURL(/sql=/);
    const table = page.getByTestId('sql-table');
    await table.getByText('ui-frontend').waitFor();
    assert.ok((await table.locator('tbody tr').count()) >= 2);
    await shot('09-sql');
    // A time column and a numeric column make a chart (the seeded spans
    // start within the same millisecond, so by their end times).
    await page
      .getByTestId('sql-input')
      .fill('SELECT end_time AS t, duration_ms FROM spans ORDER BY t');
    await page.getByTestId('sql-run').click();
    await page.getByTestId('sql-chart').locator('canvas').waitFor();
    assert.match(await page.getByTestId('sql-chart').locator('.u-legend').innerText(), /duration_ms/);
    assert.ok((await page.getByTestId('sql-table').locator('tbody tr').count()) >= 2);
    await shot('09-sql-result');
    // A mistake shows the server's message.
    await page.getByTestId('sql-input').fill('SELECT nope FROM spans');
    await page.getByTestId('sql-run').click();
    await page.locator('.error-box').getByText(/nope/).waitFor();
  });

  await step(ctx, 'switches to the dark theme and keeps state in the URL', async () => {
    const before = await page.evaluate(() => document.documentElement.dataset.theme);
    await page.getByTestId('theme').click();
    const after = await page.evaluate(() => document.documentElement.dataset.theme);
    assert.notEqual(after, before);
    // A shared link restores the query and the time range.
    await page.goto(`${base}/explore?query=ui_requests_total&from=now-15m&to=now`);
    await page.getByTestId('promql-chart').locator('canvas').waitFor();
    assert.equal(await page.getByTestId('promql-input').inputValue(), 'ui_requests_total');
    assert.match(await page.getByTestId('time-range').innerText(), /Last 15 minutes/);
    await shot('10-dark-metrics');
    await page.goto(`${base}/services`);
    await page.getByTestId('services-table').getByText('ui-frontend').waitFor();
    await shot('11-dark-services');
  });

  await step(ctx, 'shows the empty alerts page, then imported rules firing and inactive', async () => {
    await page.getByTestId('nav-alerts').click();
    await page.waitForURL(/\/alerts/);
    await page.getByText('No rules yet — import a rule file').waitFor();
    await page.getByText('No alert is pending or firing.').waitFor();
    // A rule that fires at its first evaluation (no `for`: the rule parser
    // refuses `for: 0s`) and one that never does.
    const rules = [
      'groups:',
      '  - name: ui-alerts',
      '    interval: 1s',
      '    rules:',
      '      - alert: UiAlwaysFiring',
      '        expr: vector(1)',
      '        labels: {severity: page}',
      '        annotations: {summary: "the browser test fires this"}',
      '      - alert: UiNeverFiring',
      '        expr: vector(1) > 2',
      '        for: 1m',
    ].join('\n');
    const r = await fetch(`${base}/api/v1/alerting/rules`, { method: 'POST', headers: { 'content-type': 'application/yaml' }, body: rules });
    assert.equal(r.status, 200, await r.clone().text());
    assert.deepEqual((await r.json()).imported, ['ui-alerts']);
    await waitFor('the alert firing', async () => {
      const a = await (await fetch(`${base}/api/v1/alerts`)).json();
      return a.data.alerts.some((x) => x.labels.alertname === 'UiAlwaysFiring' && x.state === 'firing');
    });
    await page.reload();
    const ruleRows = page.getByTestId('rules-table').getByTestId('rule-row');
    await ruleRows.filter({ hasText: 'UiAlwaysFiring' }).locator('.state', { hasText: 'firing' }).waitFor();
    await ruleRows.filter({ hasText: 'UiNeverFiring' }).locator('.state', { hasText: 'inactive' }).waitFor();
    assert.match(await ruleRows.filter({ hasText: 'UiNeverFiring' }).innerText(), /vector\(1\) > 2/);
    assert.equal(await ruleRows.count(), 2);
    const alert = page.getByTestId('alerts-table').locator('tbody tr');
    assert.equal(await alert.count(), 1);
    const text = await alert.innerText();
    assert.match(text, /UiAlwaysFiring/);
    assert.match(text, /firing/);
    assert.match(text, /severity=page/);
    assert.match(text, /the browser test fires this/);
    assert.match(await page.getByTestId('alert-stats').locator('.stat', { hasText: 'Firing' }).innerText(), /Firing\s+1/);
    await shot('12-alerts');
  });

  await step(ctx, 'creates a silence in the UI, shows an invalid one refused, and expires it', async () => {
    const form = page.getByTestId('silence-form');
    // A bad matcher: the server's message is shown.
    await form.locator('input[name=matchers]').fill('alertname=~"("');
    await form.locator('input[name=createdBy]').fill('ui-test');
    await form.getByTestId('silence-create').click();
    await form.locator('.error-box').waitFor();
    assert.match(await form.locator('.error-box').innerText(), /Could not create the silence/);
    // "Silence…" on the alert fills in its labels as matchers.
    await page.getByTestId('alerts-table').getByRole('button', { name: 'Silence…' }).click();
    assert.equal(await form.locator('input[name=matchers]').inputValue(), 'alertname="UiAlwaysFiring", severity="page"');
    assert.equal(await form.locator('.error-box').count(), 0);
    await form.locator('input[name=createdBy]').fill('ui-test');
    await form.locator('input[name=duration]').fill('1h');
    await form.locator('input[name=comment]').fill('silenced by the browser test');
    await form.getByTestId('silence-create').click();
    await form.getByTestId('silence-created').waitFor();
    assert.equal(await form.locator('.error-box').count(), 0);
    const row = page.getByTestId('silence-row').filter({ hasText: 'silenced by the browser test' });
    await row.and(page.locator('[data-state=active]')).waitFor();
    const rowText = await row.innerText();
    assert.match(rowText, /alertname="UiAlwaysFiring"/);
    assert.match(rowText, /severity="page"/);
    assert.match(rowText, /ui-test/);
    const listed = (await (await fetch(`${base}/api/v1/alerting/silences`)).json()).silences;
    assert.equal(listed.length, 1);
    assert.equal(listed[0].status.state, 'active');
    const ends = Date.parse(listed[0].endsAt) - Date.parse(listed[0].startsAt);
    assert.ok(Math.abs(ends - 3600e3) < 5000, `a silence of one hour, not ${ends} ms`);
    assert.match(await page.getByTestId('alert-stats').locator('.stat', { hasText: 'Active silences' }).innerText(), /1$/);
    await shot('13-silence');
    await row.getByTestId('silence-expire').click();
    await row.and(page.locator('[data-state=expired]')).waitFor();
    assert.equal(await row.getByTestId('silence-expire').count(), 0);
    const after = (await (await fetch(`${base}/api/v1/alerting/silences`)).json()).silences;
    assert.equal(after[0].status.state, 'expired');
  });

  await step(ctx, 'shows a failing notification channel', async () => {
    assert.equal(await page.getByTestId('failing-channels').count(), 0);
    // A webhook nobody listens on, and a route that sends to it at once.
    const put = (path, body) => fetch(`${base}${path}`, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    let r = await put('/api/v1/alerting/channels/ui-broken', { type: 'webhook', url: 'http://127.0.0.1:9/hook' });
    assert.equal(r.status, 200, await r.text());
    r = await put('/api/v1/alerting/routing', { route: { receiver: 'ui-broken', group_wait: '100ms', group_interval: '1s' } });
    assert.equal(r.status, 200, await r.text());
    await waitFor('the channel failing', async () => {
      const c = await (await fetch(`${base}/api/v1/alerting/channels`)).json();
      return c.channels.some((x) => x.name === 'ui-broken' && x.status.failing);
    });
    await page.reload();
    const box = page.getByTestId('failing-channels');
    await box.getByText('ui-broken').waitFor();
    assert.match(await box.innerText(), /webhook/);
  });

  await step(ctx, 'lists the alert transitions in the history', async () => {
    const rows = page.getByTestId('history-table').getByTestId('history-row');
    await rows.first().waitFor();
    const firing = rows.filter({ hasText: /ui-alerts\/UiAlwaysFiring#\d/ }).filter({ has: page.locator('.state-firing') });
    await firing.first().waitFor();
    assert.match(await firing.first().innerText(), /severity=page/);
    // The rule that never matched made no transition.
    assert.equal(await rows.filter({ hasText: 'UiNeverFiring' }).count(), 0);
    await shot('14-alert-history');
  });

  await step(ctx, 'lists an SLO with its error budget and draws the burn-down', async () => {
    await page.getByTestId('nav-slos').click();
    await page.waitForURL(/\/slos/);
    await page.getByText('No SLOs yet').waitFor();
    const body = {
      description: 'ui-frontend requests without errors',
      target: 0.99,
      window: '1h',
      indicator: { spans: { service: 'ui-frontend' } },
    };
    const r = await fetch(`${base}/api/v1/slos/ui-availability`, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    assert.equal(r.status, 200, await r.clone().text());
    // The seeded GET /checkout of ui-frontend is one request, and it failed.
    const report = await waitFor('the SLO report with the seeded request', async () => {
      const v = await (await fetch(`${base}/api/v1/slos/ui-availability`)).json();
      return v.report?.events.total >= 1 ? v.report : null;
    });
    assert.equal(report.events.good, 0);
    await page.reload();
    const row = page.getByTestId('slos-table').getByTestId('slo-row').filter({ hasText: 'ui-availability' });
    await row.waitFor();
    const cells = await row.locator('td').allInnerTexts();
    assert.equal(cells[2], '99%');
    assert.equal(cells[3], '1h');
    assert.equal(cells[4], '0.00%'); // the SLI
    assert.match(cells[6], new RegExp(`^${report.error_budget.remaining_percent.toFixed(1)}%$`));
    assert.ok(report.error_budget.remaining < 0, 'the budget is overspent');
    assert.match(cells[5], /^-/);
    await row.getByTestId('slo-link').click();
    await page.waitForURL(/slo=ui-availability/);
    await page.getByTestId('slo-title').getByText('ui-availability').waitFor();
    const stats = await page.getByTestId('slo-stats').innerText();
    assert.match(stats, /Budget remaining/);
    assert.match(stats, /0 \/ 1/); // good / total events
    await page.getByTestId('slo-burn-rates').getByText('1h', { exact: true }).waitFor();
    const chart = page.getByTestId('slo-burndown');
    await chart.locator('canvas').waitFor();
    assert.match(await chart.locator('.u-legend').innerText(), /budget remaining %/);
    await shot('15-slos');
  });

  await step(ctx, 'logged no page errors and made no failing request but the expected ones', () => {
    assert.deepEqual(pageErrors, []);
    // The invalid log query, the invalid SQL query and the invalid silence (400 each).
    const expected = ['400 /api/v1/logs/search', '400 /api/v1/sql', '400 /api/v1/alerting/silences'];
    const unexpected = failedRequests.filter((r) => !expected.includes(r));
    assert.deepEqual(unexpected, []);
  });
});
