// hybridgw console: a small page over the gateway's JSON API. Every value is put in the page as text
// (textContent / append of strings, never innerHTML), so names, tags and errors cannot run as markup.
"use strict";
(() => {
  const STORE = "hybridgw.console.key";  // sessionStorage: gone when the tab closes, never in a URL or cookie
  const $ = (id) => document.getElementById(id);
  let mode = null;  // "admin" or "team"
  let timer = null;

  function el(tag, attrs, ...kids) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v);
    }
    for (const kid of kids.flat()) if (kid !== null && kid !== undefined) node.append(kid instanceof Node ? kid : String(kid));
    return node;
  }

  function table(id, heads, rows) {
    const head = el("tr", {}, heads.map((h) => el("th", {}, h)));
    $(id).replaceChildren(head, ...rows.map((cells) => el("tr", {}, cells.map((c) => c instanceof Node && c.tagName === "TD" ? c : el("td", {}, c)))));
    if (!rows.length) $(id).append(el("tr", {}, el("td", { class: "muted", colspan: String(heads.length) }, "none")));
  }

  const num = (v) => (v === null || v === undefined ? "-" : Number(v).toLocaleString("en-US"));
  const usd = (v) => (v === null || v === undefined ? "-" : "$" + Number(v).toFixed(Math.abs(v) < 1 ? 4 : 2));
  const ms = (s) => (s === null || s === undefined ? "-" : (s * 1000).toFixed(s < 0.1 ? 1 : 0) + " ms");
  const pct = (v) => (v === null || v === undefined ? "-" : (100 * v).toFixed(0) + "%");
  const when = (t) => (t ? new Date(t * 1000).toISOString().replace("T", " ").slice(0, 19) : "-");

  function bar(frac, label) {
    const f = Math.max(0, Math.min(1, frac || 0));
    const cls = frac >= 1 ? "over" : frac >= 0.8 ? "warn" : "";
    return el("span", {}, el("span", { class: "bar" }, el("i", { class: cls, style: `width:${(100 * f).toFixed(1)}%` })), label);
  }

  function budget(status) {  // {spent_usd, limit_usd, forecast_usd} or null
    if (!status || status.limit_usd === null || status.limit_usd === undefined) return "-";
    const frac = status.limit_usd > 0 ? status.spent_usd / status.limit_usd : 1;
    return el("span", { title: "forecast " + usd(status.forecast_usd) },
      bar(frac, `${usd(status.spent_usd)} / ${usd(status.limit_usd)} → ${usd(status.forecast_usd)}`));
  }

  async function api(path, { anyStatus = false, ...options } = {}) {  // anyStatus: /readyz answers 503 with a body
    const key = sessionStorage.getItem(STORE);
    const headers = { authorization: "Bearer " + key, ...(options.body ? { "content-type": "application/json" } : {}) };
    const response = await fetch(path, { ...options, headers, cache: "no-store", credentials: "omit" });
    const text = await response.text();
    if (response.status === 401) { logout("The key was refused (401); log in again."); throw new Error("401"); }
    if (!response.ok && !anyStatus) {
      let message = text;
      try { message = JSON.parse(text).error.message; } catch (e) { /* not JSON: keep the text */ }
      const err = new Error(`${response.status}: ${message}`);
      err.status = response.status;
      throw err;
    }
    return (response.headers.get("content-type") || "").includes("json") ? JSON.parse(text) : text;
  }

  function report(err) { if (err.message !== "401") $("error").textContent = err.message; }

  // ---- login ----
  async function login(key) {
    sessionStorage.setItem(STORE, key);
    try {
      await api("/console/api/teams");
      mode = "admin";
    } catch (err) {
      if (err.status !== 403) { if (err.message !== "401") $("login-error").textContent = err.message; return; }
      mode = "team";  // a team's key: /v1/usage shows its own team only
    }
    $("login").hidden = true;
    $("tabs").hidden = false;
    $("logout").hidden = false;
    $("who").textContent = mode === "admin" ? "admin" : "team key";
    for (const b of document.querySelectorAll("#tabs button[data-admin], label[data-admin]")) b.hidden = mode !== "admin";
    show(mode === "admin" ? "overview" : "usage");
  }

  function logout(message) {
    sessionStorage.removeItem(STORE);
    mode = null;
    clearInterval(timer);
    for (const v of document.querySelectorAll(".view")) v.hidden = true;
    $("tabs").hidden = $("logout").hidden = true;
    $("who").textContent = "";
    $("login").hidden = false;
    $("login-error").textContent = message || "";
  }

  const loaders = { overview: loadOverview, teams: loadTeams, keys: loadKeys, usage: loadUsage, requests: loadRequests,
    policy: loadPolicy };

  function show(tab) {
    clearInterval(timer);
    $("error").textContent = "";
    for (const b of document.querySelectorAll("#tabs button")) b.classList.toggle("on", b.dataset.tab === tab);
    for (const v of document.querySelectorAll(".view")) v.hidden = v.id !== "view-" + tab;
    loaders[tab]().catch(report);
    if (tab === "overview") timer = setInterval(() => loadOverview().catch(report), 5000);
  }

  // ---- overview: policy in force, live backends ----
  const card = (label, value) => el("div", {}, el("b", {}, value), label);

  async function loadOverview() {
    const [ready, backends, now] = await Promise.all([api("/readyz", { anyStatus: true }),
      api("/console/api/backends"), api("/console/api/now")]);
    $("now").replaceChildren(card("requests/s" + (now.truncated ? " (at least)" : ""), now.requests_per_s.toFixed(2)),
      card("served locally", pct(now.share_local)), card("TTFT p50", ms(now.ttft_p50_s)), card("TTFT p95", ms(now.ttft_p95_s)),
      card("ITL p50", ms(now.itl_p50_s)), card("errors", num(now.errors)), card("refused", num(now.rejected)));
    const p = ready.policy || {};
    $("policy").replaceChildren(...[
      el("div", {}, "Status: ", el("b", { class: ready.status === "ready" ? "ok" : "err" }, ready.status)),
      el("div", {}, `Version ${p.version || "-"}, in force since ${when(p.loaded_at)}, ${num(p.reloads)} reloads`),
      p.last_reload_error ? el("div", { class: "err" }, "Last reload refused: " + p.last_reload_error) : null,
      (p.restart_needed || []).length ? el("div", { class: "err" }, "Waiting for a restart: " + p.restart_needed.join("; ")) : null,
    ].filter(Boolean));
    table("backends", ["backend", "where", "circuit", "in flight", "requests", "failures", "KV use", "running", "waiting",
      "TTFT ewma", "TTFT p95", "decode tok/s"], backends.data.map((b) => {
      const e = b.engine;
      const circuit = b.unreachable ? "unreachable" : b.circuit;
      return [b.name, `${b.local ? "local" : "hosted"} (${b.kind})`, el("td", { class: circuit === "closed" ? "ok" : "err" }, circuit), num(b.in_flight),
        num(b.requests), num(b.failures), e && e.kv_used !== null ? bar(e.kv_used, pct(e.kv_used)) : "-",
        e ? num(e.running) : "-", e ? num(e.waiting) : "-", ms(b.ttft_ewma_s), ms(b.ttft_p95_s),
        e ? num(Math.round(e.decode_tokens_per_s)) : "-"];
    }));
  }

  // ---- teams: the policy's teams with today's and this month's spend against their budgets ----
  async function loadTeams() {
    const [teams, today] = await Promise.all([api("/console/api/teams"), api("/v1/usage?by=team&since=1d")]);
    const rows = new Map(today.rows.map((r) => [r.name, r]));
    table("teams", ["team", "aliases", "RPM", "TPM", "requests 24h", "spend 24h", "budget today (spent / limit → forecast)",
      "budget this month", "on exceed"], teams.data.map((t) => {
      const r = rows.get(t.team) || {};
      const day = { spent_usd: r.budget_day_spent_usd || 0, limit_usd: t.budget.usd_per_day, forecast_usd: r.budget_day_forecast_usd || 0 };
      const month = { spent_usd: r.budget_month_spent_usd || 0, limit_usd: t.budget.usd_per_month, forecast_usd: r.budget_month_forecast_usd || 0 };
      return [t.team, el("td", { class: "l" }, t.models.join(", ")), num(t.limits.requests_per_minute),
        num(t.limits.tokens_per_minute), num(r.requests || 0), usd(r.cost_usd || 0), budget(day), budget(month), t.budget.on_exceed];
    }));
  }

  // ---- keys: list, create, rotate, revoke (the admin API of `hybridgw keys`) ----
  async function loadKeys() {
    const teams = await api("/console/api/teams");
    const chosen = $("k-team").value;
    $("k-team").replaceChildren(...teams.data.map((t) => el("option", {}, t.team)));
    if (chosen) $("k-team").value = chosen;
    const keys = await api("/admin/keys" + ($("show-revoked").checked ? "?all=true" : ""));
    table("keys", ["key id", "name", "team", "models", "expires", "RPM / TPM", "budget today", "budget month", "spend to date",
      "requests", "last used", "tags", ""], keys.data.map((k) => {
      const s = k.budget_status || {};
      const tags = Object.entries(k.tags || {}).map(([a, b]) => `${a}=${b}`).join(", ");
      return [el("code", {}, k.key_id), el("td", { class: "l" }, k.name), k.team, k.models ? k.models.join(", ") : "all",
        when(k.expires_at), `${num(k.limits.requests_per_minute)} / ${num(k.limits.tokens_per_minute)}`,
        budget(s.day), budget(s.month), usd(k.spend_usd), num(k.requests), when(k.last_used_at),
        el("td", { class: "l" }, tags), k.revoked_at ? el("td", { class: "muted" }, "revoked " + when(k.revoked_at)) : actions(k)];
    }));
  }

  function actions(k) {
    const rotate = el("button", { class: "act sub", "data-rotate": k.key_id, onclick: () => rotateKey(k.key_id) }, "Rotate");
    const revoke = el("button", { class: "act danger", "data-revoke": k.key_id }, "Revoke");
    revoke.addEventListener("click", () => {  // two clicks: no modal dialog, still no accident
      if (!revoke.classList.contains("armed")) { revoke.classList.add("armed"); revoke.textContent = "Confirm revoke"; return; }
      api("/admin/keys/" + encodeURIComponent(k.key_id), { method: "DELETE" }).then(loadKeys).catch(keysError);
    });
    return el("td", {}, rotate, " ", revoke);
  }

  function keysError(err) { if (err.message !== "401") $("keys-error").textContent = err.message; }

  function showNewKey(what, key) {
    $("new-key").replaceChildren(el("div", { class: "newkey" }, `${what} Copy it now; it is not shown again: `,
      el("code", { id: "new-key-value" }, key)));
  }

  async function rotateKey(id) {
    try {
      const body = JSON.stringify({ grace_period: $("grace").value.trim() || "0" });
      const made = await api(`/admin/keys/${encodeURIComponent(id)}/rotate`, { method: "POST", body });
      await loadKeys().catch(keysError);  // the list first, then the key: it stays in view
      showNewKey(`Key ${made.key_id} rotated; the old secret works for ${$("grace").value || "0"}.`, made.key);
    } catch (err) { keysError(err); }
  }

  function createBody() {
    const v = (id) => $(id).value.trim();
    const n = (id) => (v(id) === "" ? null : Number(v(id)));
    const body = { team: v("k-team"), name: v("k-name") };
    if (v("k-models")) body.models = v("k-models").split(",").map((s) => s.trim()).filter(Boolean);
    if (v("k-duration")) body.duration = v("k-duration");
    if (n("k-rpm") !== null || n("k-tpm") !== null) body.limits = { requests_per_minute: n("k-rpm"), tokens_per_minute: n("k-tpm") };
    if (n("k-day") !== null || n("k-month") !== null || v("k-exceed")) {
      body.budget = { usd_per_day: n("k-day"), usd_per_month: n("k-month"), on_exceed: v("k-exceed") || null };
    }
    if (v("k-tags")) {
      const pair = (p) => (p.includes("=") ? [p.slice(0, p.indexOf("=")), p.slice(p.indexOf("=") + 1)] : [p, ""]);
      body.tags = Object.fromEntries(v("k-tags").split(",").map((p) => pair(p).map((s) => s.trim())).filter((p) => p[0]));
    }
    return body;
  }

  async function createKey(event) {
    event.preventDefault();
    $("keys-error").textContent = "";
    try {
      const made = await api("/admin/keys", { method: "POST", body: JSON.stringify(createBody()) });
      await loadKeys().catch(keysError);
      showNewKey(`Key ${made.key_id} created for team ${made.team}.`, made.key);
    } catch (err) { keysError(err); }
  }

  // ---- usage: chargeback rows per team / key / tag, the CSV, and the report with its plots ----
  const usageQuery = (extra) => `/v1/usage?since=${encodeURIComponent($("u-since").value)}` +
    ($("u-team").value ? `&team=${encodeURIComponent($("u-team").value)}` : "") + extra;

  async function loadUsage() {
    if (mode === "admin" && $("u-team").options.length === 1) {
      const teams = await api("/console/api/teams");
      $("u-team").append(...teams.data.map((t) => el("option", {}, t.team)));
    }
    const by = $("u-by").value;
    const data = await api(usageQuery(`&by=${encodeURIComponent(by)}`));
    $("usage-note").textContent = `${when(data.since)} to ${when(data.until)} UTC` + (data.truncated ? " (only the newest records were read)" : "");
    const row = (r) => [el("td", { class: "l" }, r.name), num(r.requests), num(r.prompt_tokens), num(r.completion_tokens),
      usd(r.hosted_usd), usd(r.local_usd), usd(r.all_hosted_usd), usd(r.savings_usd), pct(r.share_local), num(r.errors),
      num(r.rejected), ms(r.ttft_p50_s), ms(r.ttft_p95_s), ms(r.itl_p95_s), ms(r.e2e_p95_s)];
    table("usage", [by, "requests", "tokens in", "tokens out", "hosted $", "local $", "all-hosted $", "savings", "local share",
      "errors", "rejected", "TTFT p50", "TTFT p95", "ITL p95", "E2E p95"], [...data.rows.map(row), row(data.total)]);
  }

  async function downloadCsv() {
    const text = await api(usageQuery(`&by=${encodeURIComponent($("u-by").value)}&format=csv`));
    const link = el("a", { href: URL.createObjectURL(new Blob([text], { type: "text/csv" })), download: "hybridgw-usage.csv" });
    link.click();
    URL.revokeObjectURL(link.href);
  }

  async function showPlots() {
    // the report is our own script-free HTML; a sandboxed srcdoc frame keeps it inert all the same
    $("plots").srcdoc = await api(usageQuery("&format=html"));
    $("plots-box").hidden = false;
  }

  // ---- recent requests (ledger records: route, tokens, cost, timings; no prompt text is stored) ----
  async function loadRequests() {
    const team = $("r-team").value.trim();
    const data = await api(`/console/api/requests?limit=${encodeURIComponent($("r-limit").value || "100")}` +
      (team ? `&team=${encodeURIComponent(team)}` : ""));
    table("requests", ["time (UTC)", "request id", "team", "key", "model", "backend", "rule", "status", "HTTP",
      "tokens in/out", "cost", "TTFT", "E2E"], data.data.map((r) => [when(r.time), el("code", {}, r.request_id), r.team,
      r.key_id, r.model_alias, r.backend || "-", r.rule || "-", el("td", { class: r.status === "ok" ? "ok" : "err" }, r.status),
      r.http_status, `${num(r.prompt_tokens)} / ${num(r.completion_tokens)}`, usd(r.cost_usd), ms(r.ttft_s), ms(r.e2e_s)]));
  }

  // ---- policy: rules and aliases in force, and explain for a pasted request ----
  async function loadPolicy() {
    const [p, teams] = await Promise.all([api("/console/api/policy"), api("/console/api/teams")]);
    table("rules", ["rule", "strategy", "shadow", "description"], p.rules.map((r) =>
      [r.name, el("td", { class: "l" }, r.strategy), r.shadow ? "yes" : "", el("td", { class: "l" }, r.description)]));
    table("aliases", ["alias", "deployments (backend: model)"], Object.entries(p.models).map(([alias, ds]) =>
      [alias, el("td", { class: "l" }, ds.map((d) => `${d.backend}: ${d.model}`).join(", "))]));
    const chosen = $("x-team").value;
    $("x-team").replaceChildren(...teams.data.map((t) => el("option", {}, t.team)));
    if (chosen) $("x-team").value = chosen;
  }

  async function explainRequest() {
    let body, headers;
    try { body = JSON.parse($("x-body").value); headers = JSON.parse($("x-headers").value || "{}"); }
    catch (e) { throw new Error("Not JSON: " + e.message); }
    const out = await api("/console/api/explain", { method: "POST", body: JSON.stringify({ team: $("x-team").value, body, headers }) });
    const d = out.decision, f = out.facts;
    const line = (k, v) => el("tr", {}, el("th", { class: "l" }, k), el("td", { class: "l" }, v));
    const kv = (o) => Object.entries(o || {}).map(([k, v]) => `${k}=${v}`).join(", ") || "-";
    $("explained").replaceChildren(el("table", { id: "explain-result" },
      line("rule", `${d.rule} (${d.strategy || "default"})`),
      line("targets", d.targets.map((t) => `${t.backend} (${t.model})`).join(" → ") || "none"),
      line("reason", d.reason), d.refusal ? line("refusal", d.refusal) : null,
      d.shadow_rule ? line("shadow", `${d.shadow_rule}: ${d.shadow_reason}`) : null,
      line("prompt tokens", `${f.prompt_tokens} (${f.encoding})`),
      line("expected output tokens", `${f.expected_output_tokens} (${f.output_source})`),
      line("KV bytes", kv(f.kv_bytes)), line("blocks needed", kv(f.blocks_needed)),
      line("estimated cost (USD)", kv(f.est_cost_usd)), line("over budget", String(f.over_budget)),
      line("difficulty", f.difficulty === null ? "-" : f.difficulty.toFixed(3)), line("tags", kv(f.tags))));
  }

  // ---- wiring ----
  const submit = (id, fn) => $(id).addEventListener("submit", (e) => { e.preventDefault(); fn().catch(report); });
  $("login-form").addEventListener("submit", (e) => { e.preventDefault(); login($("login-key").value.trim()); $("login-key").value = ""; });
  $("logout").addEventListener("click", () => logout(""));
  for (const b of document.querySelectorAll("#tabs button")) b.addEventListener("click", () => show(b.dataset.tab));
  $("create-form").addEventListener("submit", createKey);
  $("show-revoked").addEventListener("change", () => loadKeys().catch(keysError));
  $("keys-options").addEventListener("submit", (e) => e.preventDefault());
  submit("usage-form", loadUsage);
  submit("requests-form", loadRequests);
  submit("explain-form", explainRequest);
  $("u-csv").addEventListener("click", () => downloadCsv().catch(report));
  $("u-plots").addEventListener("click", () => showPlots().catch(report));
  if (sessionStorage.getItem(STORE)) login(sessionStorage.getItem(STORE));
})();
