// The operator dashboard: polls the admin JSON API every 2 s and renders tables.
// Plain DOM building with textContent only (names and reasons come from configs and
// clients: never parsed as HTML). Rates are differences of the cumulative counters
// of /api/stats between two polls. Rollout actions ask for a confirmation in-page.
"use strict";

const POLL_MS = 2000;
const state = {
  token: sessionStorage.getItem("gatewayAdminToken") || "",
  prev: null, // the previous /api/stats answer
  rates: {}, // route -> {rps, eps, bps}
  confirm: null, // {kind, name, action} awaiting confirmation
  data: {},
};

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(node.dataset, v);
    else node.setAttribute(k, v);
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

async function api(method, path, body) {
  const headers = {};
  if (state.token) headers.Authorization = "Bearer " + state.token;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (resp.status === 401) {
    document.getElementById("token-form").hidden = false;
    throw new Error("token required");
  }
  let json = null;
  try { json = await resp.json(); } catch (e) { json = {error: resp.statusText}; }
  return {status: resp.status, json};
}

function flash(text, cls) {
  const f = document.getElementById("flash");
  f.replaceChildren(el("span", {class: cls || ""}, text));
}

function fmt(n, digits) {
  if (n === null || n === undefined || Number.isNaN(n)) return "–";
  return Number(n).toFixed(digits === undefined ? 1 : digits);
}

function computeRates(stats) {
  const prev = state.prev;
  if (prev && stats.time > prev.time) {
    const dt = stats.time - prev.time;
    for (const [name, r] of Object.entries(stats.routes)) {
      const p = prev.routes[name];
      if (!p || r.requests < p.requests) continue; // new route or a counter reset
      state.rates[name] = {
        rps: (r.requests - p.requests) / dt,
        eps: (r.errors - p.errors) / dt,
        bps: (r.blocked - p.blocked) / dt,
      };
    }
  }
  state.prev = stats;
}

function fill(id, rows) {
  const body = document.querySelector(`#${id} tbody`);
  if (!rows.length) {
    const span = document.querySelectorAll(`#${id} thead th`).length;
    rows = [el("tr", {}, el("td", {colspan: span, class: "muted"}, "none"))];
  }
  body.replaceChildren(...rows);
}

function renderSummary(st) {
  const s = st.json;
  if (st.status !== 200) return flash("status: " + (s.error || st.status), "bad");
  const last = s.last_reload || {};
  const errs = (last.errors || []).map((e) => (e.path ? e.path + ": " : "") + e.message);
  document.getElementById("summary").replaceChildren(
    el("span", {}, `v${s.version} · config ${String(s.config_hash || "mixed").slice(0, 12)}`),
    el("span", {class: "muted"}, ` · ${s.workers.length} worker(s) · `),
    el("span", {class: last.result === "failed" ? "bad" : "muted"},
      last.result ? `last reload ${last.result}${errs.length ? ": " + errs.join("; ") : ""}`
        : "no reload yet"),
  );
}

function renderRoutes(routes, stats) {
  fill("routes", routes.map((r) => {
    const rate = state.rates[r.name] || {};
    const c = (stats.routes || {})[r.name] || {requests: 0, errors: 0};
    const errPct = c.requests ? (100 * c.errors) / c.requests : 0;
    return el("tr", {dataset: {route: r.name}},
      el("td", {}, r.name),
      el("td", {}, r.upstream),
      el("td", {}, ...r.filters.map((f) => el("span", {class: "tag"}, f))),
      el("td", {class: "n rps"}, fmt(rate.rps)),
      el("td", {class: "n eps " + (rate.eps > 0 ? "bad" : "")}, fmt(rate.eps)),
      el("td", {class: "n " + (errPct > 1 ? "bad" : "")}, fmt(errPct) + "%"),
      el("td", {class: "n bps"}, fmt(rate.bps)),
      el("td", {class: "n total"}, c.requests));
  }));
}

const NEXT = {progressing: ["pause", "promote", "abort"], paused: ["resume", "promote", "abort"],
  pending: ["promote", "abort"]};

function actionCell(kind, name, actions, run) {
  const c = state.confirm;
  if (c && c.kind === kind && c.name === name) {
    return el("td", {},
      `${c.action} ${name}? `,
      el("button", {class: "confirm", dataset: {confirm: c.action}, onclick: () => {
        state.confirm = null; run(c.action);
      }}, "Confirm " + c.action),
      el("button", {onclick: () => { state.confirm = null; render(); }}, "Cancel"));
  }
  return el("td", {}, ...actions.map((a) => el("button", {dataset: {action: a}, onclick: () => {
    state.confirm = {kind, name, action: a}; render();
  }}, a)));
}

function renderRollouts(rollouts) {
  fill("rollouts", rollouts.map((r) => {
    const gates = Object.entries(r.window || {}).map(([k, v]) =>
      el("span", {class: "tag"},
        `${k}=${typeof v === "number" && !Number.isInteger(v) ? fmt(v, 3) : v}`));
    const cls = {failed: "bad", aborted: "bad", paused: "warn", promoted: "ok"}[r.state] || "";
    const run = (action) => act("POST", `/api/rollouts/${encodeURIComponent(r.name)}/${action}`,
      `${action} ${r.name}`);
    return el("tr", {dataset: {rollout: r.name}},
      el("td", {}, r.name, r.consistent === false ? el("span", {class: "warn"}, " (workers differ)") : null),
      el("td", {class: "state " + cls}, r.state),
      el("td", {}, `${r.step + 1} / ${r.steps}`),
      el("td", {class: "weight"}, `${r.weight}%`),
      el("td", {}, r.hold_s ? `${fmt(r.held_s, 0)} / ${r.hold_s} s` : `${fmt(r.held_s, 0)} s`),
      el("td", {}, ...gates),
      el("td", {class: "muted"}, r.reason),
      actionCell("rollout", r.name, NEXT[r.state] || [], run));
  }));
}

function renderServices(services) {
  document.getElementById("services").replaceChildren(...services.map((s) =>
    el("div", {class: "split", dataset: {service: s.name}}, el("b", {}, s.name),
      el("div", {class: "bar"}, ...s.versions.filter((v) => v.weight > 0).map((v) =>
        el("span", {style: `width:${v.weight}%`, title: `${v.name} ${v.weight}%`},
          `${v.name} ${v.weight}%`))))));
}

function renderUpstreams(upstreams) {
  const rows = [];
  for (const u of upstreams) {
    for (const e of u.endpoints) {
      const b = e.breaker.state;
      const h = e.health.checked ? (e.health.up ? "up" : "down") : "not checked";
      const run = () => act("POST", `/api/upstreams/${encodeURIComponent(u.name)}/reset-breakers`,
        `breaker reset of ${e.endpoint}`, {endpoint: e.endpoint});
      rows.push(el("tr", {dataset: {upstream: u.name, endpoint: e.endpoint}},
        el("td", {}, u.name),
        el("td", {}, e.endpoint),
        el("td", {class: e.available ? "ok" : "bad"}, e.available ? "in" : "out"),
        el("td", {class: h === "down" ? "bad" : ""}, h, e.health.last_error ? el("div", {class: "muted"}, e.health.last_error) : null),
        el("td", {class: "breaker " + (b === "closed" ? "ok" : "bad")}, b.replace("_", "-")),
        el("td", {class: "n"}, e.in_flight),
        el("td", {class: "n"}, `${e.pool.open} / ${e.pool.idle}`),
        el("td", {class: "muted"}, (e.workers || []).map((w) => `${w.worker}:${w.breaker}`).join(" ")),
        b === "closed" ? el("td", {}) : actionCell("breaker", e.endpoint, ["reset"], run)));
    }
  }
  fill("upstreams", rows);
}

function renderBans(bans, blocks) {
  if (bans.status !== 200) {
    fill("bans", [el("tr", {}, el("td", {colspan: 5, class: "muted"}, bans.json.error))]);
  } else {
    fill("bans", bans.json.bans.map((b) => el("tr", {dataset: {ban: b.ip}},
      el("td", {}, b.ip), el("td", {class: "n"}, fmt(b.remaining_s, 0) + " s"),
      el("td", {}, b.reason), el("td", {class: "n"}, b.count),
      actionCell("ban", b.ip, ["lift"], () => act("DELETE", `/api/bans/${encodeURIComponent(b.ip)}`,
        `lift of ${b.ip}`)))));
  }
  fill("blocks", (blocks.json.blocks || []).map((b) => el("tr", {},
    el("td", {}, b.ip), el("td", {class: "n"}, b.blocks), el("td", {class: "n"}, fmt(b.last_s_ago, 0) + " s ago"))));
}

async function act(method, path, what, body) {
  try {
    const r = await api(method, path, body);
    if (r.status === 200) flash(`${what}: done`, "ok");
    else flash(`${what}: ${r.json.error || r.status}`, "bad");
  } catch (e) {
    flash(`${what}: ${e.message}`, "bad");
  }
  await poll();
}

function render() {
  const d = state.data;
  if (!d.routes) return;
  renderSummary(d.status);
  renderRoutes(d.routes.json.routes || [], d.stats.json);
  renderRollouts(d.rollouts.status === 200 ? d.rollouts.json.rollouts : []);
  renderServices(d.services.json.services || []);
  renderUpstreams(d.upstreams.json.upstreams || []);
  renderBans(d.bans, d.blocks);
}

let polling = null;
async function poll() {
  if (polling) return polling;
  polling = (async () => {
    try {
      const names = ["status", "routes", "stats", "rollouts", "services", "upstreams", "bans", "blocks"];
      const answers = await Promise.all(names.map((n) => api("GET", "/api/" + n)));
      const d = Object.fromEntries(names.map((n, i) => [n, answers[i]]));
      if (d.stats.status === 200) computeRates(d.stats.json);
      state.data = d;
      render();
      document.getElementById("poll").textContent = "updated " + new Date().toLocaleTimeString();
      document.body.dataset.polls = String(Number(document.body.dataset.polls || 0) + 1);
    } catch (e) {
      document.getElementById("poll").textContent = "poll failed: " + e.message;
    } finally {
      polling = null;
    }
  })();
  return polling;
}

document.getElementById("token-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  state.token = document.getElementById("token").value.trim();
  sessionStorage.setItem("gatewayAdminToken", state.token);
  document.getElementById("token-form").hidden = true;
  poll();
});

poll();
setInterval(poll, POLL_MS);
