// Tessera web UI: plain DOM, no framework, no inline script (the page is served with
// `Content-Security-Policy: default-src 'self'`). Every value from the API is written with
// textContent, never as HTML. The only secret this page ever shows is a personal access token
// the user just created, once.
"use strict";

(function () {
  const PAGES = ["connections", "activity", "tokens", "servers", "users", "admin"];
  const CONNECTING = "tessera.connecting"; // sessionStorage: server whose connect flow we started
  const state = { me: null, admin: false, activityCursor: null, users: null };

  const $ = (id) => document.getElementById(id);

  // ------------------------------------------------------------------ HTTP

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  // Same-origin fetch with the session cookie. The gateway's CSRF rule for mutating calls is
  // satisfied by the browser itself: a same-origin fetch carries `Origin` and
  // `Sec-Fetch-Site: same-origin`.
  async function api(path, options) {
    const opts = Object.assign({ method: "GET", credentials: "same-origin", headers: {} }, options || {});
    opts.headers = Object.assign({ Accept: "application/json" }, opts.headers);
    if (opts.json !== undefined) {
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(opts.json);
      delete opts.json;
    }
    let r;
    try {
      r = await fetch(path, opts);
    } catch (e) {
      throw new ApiError(0, "The gateway could not be reached.");
    }
    let body = null;
    const type = r.headers.get("content-type") || "";
    if (type.includes("json")) {
      try { body = await r.json(); } catch (e) { body = null; }
    }
    if (!r.ok) {
      const msg = (body && (body.message || body.error)) || `${r.status} ${r.statusText}`;
      throw new ApiError(r.status, msg);
    }
    return body;
  }

  // ------------------------------------------------------------------ rendering helpers

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") e.className = v;
      else if (k === "text") e.textContent = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children) {
      if (c === null || c === undefined) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  function toDate(v) {
    if (v === null || v === undefined || v === "") return null;
    const d = typeof v === "number" ? new Date(v < 1e12 ? v * 1000 : v) : new Date(v);
    return isNaN(d.getTime()) ? null : d;
  }

  function time(v, empty) {
    const d = toDate(v);
    if (!d) return document.createTextNode(empty === undefined ? "—" : empty);
    return el("time", { datetime: d.toISOString(), title: d.toISOString() }, d.toLocaleString());
  }

  function badge(text, kind) {
    return el("span", { class: `badge ${kind || text}` }, text.replace(/_/g, " "));
  }

  function listOf(body, ...keys) {
    if (Array.isArray(body)) return body;
    for (const k of keys) if (body && Array.isArray(body[k])) return body[k];
    return [];
  }

  function show(id, on) { $(id).hidden = !on; }

  function showError(id, err) {
    const p = $(id);
    if (!err) { p.hidden = true; p.textContent = ""; return; }
    p.textContent = err.status === 403
      ? "You do not have access to this. It is for administrators."
      : `Could not load: ${err.message}`;
    p.hidden = false;
  }

  function banner(text, kind) {
    const b = $("banner");
    b.className = `banner ${kind || "info"}`;
    b.dataset.kind = kind || "info";
    $("banner-text").textContent = text;
    b.hidden = false;
  }

  // ------------------------------------------------------------------ connections

  async function loadConnections() {
    const tbody = $("connections-table").querySelector("tbody");
    let body;
    try {
      body = await api("/api/v1/user/credentials");
      showError("connections-error", null);
    } catch (e) {
      if (e.status === 401) return signedOut();
      showError("connections-error", e);
      return [];
    }
    const creds = listOf(body, "credentials", "servers", "items");
    tbody.replaceChildren(...creds.map(connectionRow));
    show("connections-empty", creds.length === 0);
    $("connections").dataset.loaded = "1";
    return creds;
  }

  function connectionRow(c) {
    const name = c.server || c.name;
    const status = c.status || "not_connected";
    const actions = el("td", { class: "actions" });
    if (status === "connected" || status === "expired") {
      actions.append(el("button", {
        type: "button", class: "danger", "data-action": "disconnect",
        "aria-label": `Disconnect ${name}`, onclick: () => disconnect(name),
      }, "Disconnect"));
    }
    if (c.connect_path && status !== "unavailable") {
      actions.append(" ", el("a", {
        class: "button primary", href: c.connect_path, "data-action": "connect",
        "aria-label": `${status === "connected" ? "Reconnect" : "Connect"} ${name}`,
        onclick: () => sessionStorage.setItem(CONNECTING, name),
      }, status === "connected" ? "Reconnect" : "Connect"));
    }
    const scopes = Array.isArray(c.scopes) ? c.scopes.join(" ") : (c.scopes || "");
    return el("tr", { "data-server": name, "data-status": status },
      el("th", { scope: "row" }, name),
      el("td", {}, (c.mode || "").replace(/_/g, " ")),
      el("td", { class: "status" }, badge(status), c.reason ? el("span", { class: "reason" }, ` ${c.reason}`) : null),
      el("td", {}, time(c.expires_at)),
      el("td", {}, scopes || "—"),
      actions);
  }

  async function disconnect(name) {
    try {
      const r = await api(`/api/v1/user/credentials/${encodeURIComponent(name)}`, { method: "DELETE" });
      if (r && r.revocation_error) {
        banner(`Disconnected ${name}. The server could not be told to revoke the credential (${r.revocation_error}); Tessera deleted its copy.`, "warning");
      } else {
        banner(`Disconnected ${name}.`, "success");
      }
    } catch (e) {
      if (e.status === 401) return signedOut();
      banner(`Could not disconnect ${name}: ${e.message}`, "error");
    }
    await loadConnections();
  }

  // The connect callback sends the browser back to "/?credential_connected=1&credential_server=X"
  // or "/?credential_error=<code>&credential_server=X". Without those (an older gateway, or a
  // browser that came back by hand), the server the user started to connect is checked.
  async function callbackBanner() {
    const q = new URLSearchParams(location.search);
    const server = q.get("credential_server");
    const pending = sessionStorage.getItem(CONNECTING);
    sessionStorage.removeItem(CONNECTING);
    if (server && (q.has("credential_connected") || q.has("credential_error"))) {
      if (q.has("credential_error")) {
        banner(`${server} was not connected (${q.get("credential_error")}).`, "error");
      } else {
        banner(`${server} is connected.`, "success");
      }
      history.replaceState(null, "", location.pathname + location.hash);
      return;
    }
    if (pending) {
      const creds = await loadConnections();
      const c = (creds || []).find((x) => (x.server || x.name) === pending);
      if (c && c.status === "connected") banner(`${pending} is connected.`, "success");
      else if (c) banner(`${pending} was not connected.`, "error");
    }
  }

  // ------------------------------------------------------------------ activity

  function activityQuery() {
    const f = $("activity-filter");
    const q = new URLSearchParams();
    for (const name of ["user", "server", "type", "outcome"]) {
      const v = f.elements[name].value.trim();
      if (v && (name !== "user" || state.admin)) q.set(name, v);
    }
    for (const name of ["since", "until"]) {
      const v = f.elements[name].value;
      if (v) {
        const d = new Date(v);
        if (!isNaN(d.getTime())) q.set(name, String(Math.floor(d.getTime() / 1000)));
      }
    }
    q.set("limit", f.elements.limit.value || "50");
    return q;
  }

  // Admins: the user filter is a list of users, and rows name users by email.
  async function adminUsers() {
    if (!state.admin || state.users) return;
    try {
      const users = listOf(await api("/api/v1/admin/users"), "users");
      state.users = new Map(users.map((u) => [u.id, u]));
      const select = $("f-user");
      const chosen = select.value;
      select.replaceChildren(el("option", { value: "" }, "anyone"),
        ...users.map((u) => el("option", { value: u.id }, u.email || u.display_name || u.id)));
      select.value = chosen;
    } catch (e) {
      state.users = new Map();
    }
  }

  async function loadActivity(more) {
    $("activity").dataset.loaded = "";
    await adminUsers();
    const tbody = $("activity-table").querySelector("tbody");
    const q = activityQuery();
    const exportQuery = new URLSearchParams(q);
    exportQuery.delete("limit");
    $("activity-export").setAttribute("href", `/api/v1/activity/export?${exportQuery}`);
    if (more && state.activityCursor) q.set("cursor", state.activityCursor);
    let body;
    try {
      body = await api(`/api/v1/activity?${q}`);
      showError("activity-error", null);
    } catch (e) {
      if (e.status === 401) return signedOut();
      showError("activity-error", e);
      return;
    }
    const rows = listOf(body, "activities", "activity", "events", "items").map(activityRow);
    if (more) tbody.append(...rows); else tbody.replaceChildren(...rows);
    state.activityCursor = (body && (body.next_cursor || body.cursor)) || null;
    show("activity-more", !!state.activityCursor);
    show("activity-empty", tbody.children.length === 0);
    $("activity").dataset.loaded = "1";
  }

  function activityRow(a) {
    const type = a.type || a.action || "";
    const outcome = a.outcome || "";
    const detail = [a.reason, a.method && a.method !== type ? a.method : null, a.request_id ? `request ${a.request_id}` : null]
      .filter(Boolean).join(" · ");
    const known = state.users && a.user_id ? state.users.get(a.user_id) : null;
    const user = (known && (known.email || known.display_name)) || a.user_id || "—";
    const cells = [el("td", {}, time(a.ts || a.time || a.timestamp))];
    if (state.admin) cells.push(el("td", {}, user));
    cells.push(
      el("td", {}, a.server || "—"),
      el("td", {}, type.replace(/_/g, " ")),
      el("td", {}, a.tool || "—"),
      el("td", {}, outcome ? badge(outcome) : "—"),
      el("td", {}, detail || "—"),
      el("td", {}, a.duration_ms === null || a.duration_ms === undefined ? "—" : `${a.duration_ms} ms`));
    return el("tr", { "data-id": a.id, "data-type": type, "data-outcome": outcome, "data-server": a.server || "" }, ...cells);
  }

  // ------------------------------------------------------------------ tokens

  async function loadTokens() {
    const tbody = $("tokens-table").querySelector("tbody");
    let body;
    try {
      body = await api("/api/v1/user/tokens");
      showError("tokens-error", null);
    } catch (e) {
      if (e.status === 401) return signedOut();
      showError("tokens-error", e);
      return;
    }
    const tokens = listOf(body, "tokens");
    tbody.replaceChildren(...tokens.map((t) => {
      const expired = !t.revoked && toDate(t.expires_at) && toDate(t.expires_at) < new Date();
      const status = t.revoked ? "revoked" : expired ? "expired" : "active";
      return el("tr", { "data-token": t.id, "data-status": status },
        el("th", { scope: "row" }, t.name || "—"),
        el("td", {}, el("code", {}, t.prefix ? `${t.prefix}…` : "—")),
        el("td", {}, tokenScope(t)),
        el("td", {}, time(t.created_at)),
        el("td", {}, time(t.expires_at, "never")),
        el("td", {}, time(t.last_used_at, "never")),
        el("td", {}, badge(status)),
        el("td", { class: "actions" }, ...(status === "active"
          ? [el("button", { type: "button", "aria-label": `Regenerate ${t.name}`, onclick: () => regenerateToken(t) }, "Regenerate"), " ",
             el("button", { type: "button", class: "danger", "aria-label": `Revoke ${t.name}`, onclick: () => revokeToken(t) }, "Revoke")]
          : [])));
    }));
    show("tokens-empty", tokens.length === 0);
    await tokenServerChoices();
    $("tokens").dataset.loaded = "1";
  }

  function tokenScope(t) {
    const servers = Array.isArray(t.allowed_servers) ? t.allowed_servers.join(", ") : "all servers";
    const perms = Array.isArray(t.permissions) ? t.permissions.join(", ") : "read, write, destructive";
    return `${servers} · ${perms}`;
  }

  // The servers a new token may be limited to: the shared ones the user may use and their own.
  async function tokenServerChoices() {
    const box = $("t-servers-list");
    let body;
    try { body = await api("/api/v1/user/servers"); } catch (e) { body = null; }
    const ticked = new Set([...box.querySelectorAll("input:checked")].map((i) => i.value));
    const names = [...listOf(body, "shared", "servers"), ...listOf(body, "personal")].map((x) => x.name);
    box.replaceChildren(...names.map((n) => el("label", {},
      el("input", { type: "checkbox", name: "server", value: n, checked: ticked.has(n) }), ` ${n}`)));
    show("t-servers", names.length > 0);
  }

  async function createToken(ev) {
    ev.preventDefault();
    const f = ev.target;
    const name = f.elements.name.value.trim();
    if (!name) { f.elements.name.focus(); return; }
    try {
      const json = { name, expires_in: f.elements.expires_in.value };
      const servers = [...f.querySelectorAll("input[name=server]:checked")].map((i) => i.value);
      if (servers.length > 0) json.allowed_servers = servers;
      json.permissions = [...f.querySelectorAll("input[name=permission]:checked")].map((i) => i.value);
      const t = await api("/api/v1/user/tokens", { method: "POST", json });
      $("token-created-name").textContent = `“${t.name || name}”`;
      $("token-value").value = t.token || "";
      show("token-created", true);
      $("token-value").focus();
      $("token-value").select();
      f.reset();
      showError("tokens-error", null);
    } catch (e) {
      if (e.status === 401) return signedOut();
      $("tokens-error").textContent = `Could not create the token: ${e.message}`;
      show("tokens-error", true);
    }
    await loadTokens();
  }

  function forgetCreatedToken() {
    $("token-value").value = "";
    show("token-created", false);
    $("t-name").focus();
  }

  // A new token with the same name, servers, permissions and lifetime; the old one stops
  // working at once. The new one is shown once, like a created one.
  async function regenerateToken(t) {
    try {
      const n = await api(`/api/v1/user/tokens/${encodeURIComponent(t.id)}/regenerate`, { method: "POST" });
      $("token-created-name").textContent = `“${n.name || t.name}” (replaces the old one, now revoked)`;
      $("token-value").value = n.token || "";
      show("token-created", true);
      $("token-value").focus();
      $("token-value").select();
      showError("tokens-error", null);
    } catch (e) {
      if (e.status === 401) return signedOut();
      banner(`Could not regenerate ${t.name}: ${e.message}`, "error");
    }
    await loadTokens();
  }

  async function revokeToken(t) {
    try {
      await api(`/api/v1/user/tokens/${encodeURIComponent(t.id)}`, { method: "DELETE" });
      banner(`Revoked token ${t.name}.`, "success");
    } catch (e) {
      if (e.status === 401) return signedOut();
      banner(`Could not revoke ${t.name}: ${e.message}`, "error");
    }
    await loadTokens();
  }

  // ------------------------------------------------------------------ servers and users

  async function loadServers() {
    const tbody = $("servers-table").querySelector("tbody");
    let body;
    try {
      body = await api("/api/v1/user/servers");
      showError("servers-error", null);
    } catch (e) {
      if (e.status === 401) return signedOut();
      showError("servers-error", e);
      tbody.replaceChildren();
      return;
    }
    let ready = null;
    if (state.admin) {
      try {
        const r = await fetch("/readyz", { credentials: "same-origin", headers: { Accept: "application/json" } });
        ready = await r.json();
      } catch (e) { ready = null; }
      $("gateway-summary").textContent = ready
        ? `Gateway ${ready.ready ? "ready" : "not ready"} · ${ready.sessions} client session${ready.sessions === 1 ? "" : "s"}`
        : "Gateway health is unavailable.";
    }
    // Each server's live state as this user sees it (ready, down, switched off, not connected
    // yet) and the tools they get; the page still works without it.
    const live = new Map();
    try {
      for (const d of listOf(await api("/api/v1/user/diagnostics"), "servers")) live.set(`${d.ownership}/${d.name}`, d);
    } catch (e) { /* shown as "—" */ }
    const stateCell = (d) => el("td", { class: "state" }, d ? badge(String(d.state)) : "—",
      d && typeof d.tool_count === "number" ? el("span", { class: "reason" }, ` ${d.tool_count} tool${d.tool_count === 1 ? "" : "s"}`) : null,
      d && d.error ? el("span", { class: "reason" }, ` ${d.error}`) : null);
    const servers = listOf(body, "shared", "servers");
    tbody.replaceChildren(...servers.map((s) => {
      const name = s.name || s.server;
      const mode = s.brokered || s.mode || "";
      const health = ready && ready.upstreams ? ready.upstreams[name] : null;
      const status = s.enabled === false ? "disabled" : "enabled";
      const cells = [
        el("th", { scope: "row" }, name),
        el("td", {}, s.transport || "—", s.url || s.command ? el("span", { class: "reason" }, ` ${s.url || s.command}`) : null),
        el("td", {}, mode ? mode.replace(/_/g, " ") : "gateway's own"),
        el("td", {}, status ? badge(String(status)) : "—"),
        el("td", {}, switchButton(name, s.user_enabled !== false, (on) => setServerEnabled(name, on))),
        stateCell(live.get(`shared/${name}`)),
      ];
      if (state.admin) {
        cells.push(
          el("td", {}, health ? badge(String(health.state)) : "—", health && health.error ? el("span", { class: "reason" }, ` ${health.error}`) : null),
          el("td", {}, health ? String(health.tools) : "—"));
      }
      return el("tr", { "data-server": name }, ...cells);
    }));
    show("servers-empty", servers.length === 0);
    const personal = listOf(body, "personal");
    $("personal-table").querySelector("tbody").replaceChildren(...personal.map((p) => personalRow(p, stateCell(live.get(`personal/${p.name}`)))));
    show("personal-empty", personal.length === 0);
    $("servers").dataset.loaded = "1";
  }

  // An on/off switch: a toggle button with aria-pressed.
  function switchButton(name, on, change) {
    return el("button", {
      type: "button", class: on ? "switch on" : "switch", "aria-pressed": on ? "true" : "false",
      "aria-label": `${name} on for me`, onclick: () => change(!on),
    }, on ? "On" : "Off");
  }

  function personalRow(p, stateCell) {
    const headers = Array.isArray(p.header_names) && p.header_names.length ? p.header_names.join(", ") : "—";
    return el("tr", { "data-server": p.name, "data-enabled": p.enabled ? "1" : "0" },
      el("th", { scope: "row" }, p.name),
      el("td", {}, p.url || "—"),
      el("td", {}, p.protocol || "—"),
      el("td", {}, headers),
      el("td", {}, switchButton(p.name, p.enabled, (on) => setServerEnabled(p.name, on))),
      stateCell,
      el("td", { class: "actions" }, el("button", {
        type: "button", class: "danger", "aria-label": `Delete ${p.name}`, onclick: () => deletePersonal(p.name),
      }, "Delete")));
  }

  async function setServerEnabled(name, on) {
    try {
      await api(`/api/v1/user/servers/${encodeURIComponent(name)}/enable`, { method: "POST", json: { enabled: on } });
      banner(`${name} is ${on ? "on" : "off"} for you.`, "success");
    } catch (e) {
      if (e.status === 401) return signedOut();
      banner(`Could not switch ${name}: ${e.message}`, "error");
    }
    await loadServers();
  }

  async function deletePersonal(name) {
    if (!window.confirm(`Delete your server ${name}?`)) return;
    try {
      await api(`/api/v1/user/servers/${encodeURIComponent(name)}`, { method: "DELETE" });
      banner(`Deleted ${name}.`, "success");
    } catch (e) {
      if (e.status === 401) return signedOut();
      banner(`Could not delete ${name}: ${e.message}`, "error");
    }
    await loadServers();
  }

  function addHeaderRow() {
    const rows = $("p-header-rows");
    const n = rows.children.length + 1;
    const row = el("div", { class: "header-row" },
      el("input", { type: "text", name: "header-name", "aria-label": `Header ${n} field`, placeholder: "Authorization", autocomplete: "off" }),
      el("input", { type: "password", name: "header-value", "aria-label": `Header ${n} value`, placeholder: "value", autocomplete: "off" }));
    row.append(el("button", { type: "button", "aria-label": `Remove header ${n}`, onclick: () => row.remove() }, "×"));
    rows.append(row);
  }

  async function addPersonal(ev) {
    ev.preventDefault();
    const f = ev.target;
    const json = { name: f.elements.name.value.trim(), url: f.elements.url.value.trim(), protocol: f.elements.protocol.value };
    const headers = {};
    for (const row of $("p-header-rows").children) {
      const k = row.querySelector("input[name=header-name]").value.trim();
      const v = row.querySelector("input[name=header-value]").value;
      if (k) headers[k] = v;
    }
    if (Object.keys(headers).length) json.headers = headers;
    const broker = f.elements.auth_broker.value.trim();
    if (broker) {
      try {
        json.auth_broker = JSON.parse(broker);
      } catch (e) {
        // The parser's message can quote the text (a client secret): say only where.
        $("personal-error").textContent = "Could not add the server: the OAuth connect settings are not valid JSON.";
        show("personal-error", true);
        return;
      }
    }
    try {
      await api("/api/v1/user/servers", { method: "POST", json });
      banner(`Added ${json.name}.`, "success");
      f.reset();
      $("p-header-rows").replaceChildren();
      show("personal-error", false);
    } catch (e) {
      if (e.status === 401) return signedOut();
      $("personal-error").textContent = `Could not add the server: ${e.message}`;
      show("personal-error", true);
    }
    await loadServers();
  }

  async function loadUsers() {
    const tbody = $("users-table").querySelector("tbody");
    let body;
    try {
      body = await api("/api/v1/admin/users");
      showError("users-error", null);
    } catch (e) {
      if (e.status === 401) return signedOut();
      showError("users-error", e);
      tbody.replaceChildren();
      show("users-table", false);
      show("users-empty", false);
      $("users").dataset.loaded = "1";
      return;
    }
    const users = listOf(body, "users");
    show("users-table", true);
    tbody.replaceChildren(...users.map((u) => el("tr", { "data-user": u.id },
      el("th", { scope: "row" }, u.email || u.subject || u.id),
      el("td", {}, u.display_name || u.name || "—"),
      el("td", {}, badge(u.role || "user")),
      el("td", {}, time(u.created_at)),
      el("td", {}, time(u.last_login_at || u.last_sign_in_at || u.last_seen_at, "never")),
      el("td", {}, u.disabled ? badge("disabled") : badge("active")),
      el("td", { class: "actions" }, u.id === state.me.id ? null : el("button", {
        type: "button", class: u.disabled ? null : "danger",
        "aria-label": `${u.disabled ? "Enable" : "Disable"} ${u.email || u.id}`,
        onclick: () => setUserDisabled(u, !u.disabled),
      }, u.disabled ? "Enable" : "Disable")))));
    show("users-empty", users.length === 0);
    $("users").dataset.loaded = "1";
  }

  async function setUserDisabled(u, disabled) {
    const who = u.email || u.id;
    if (disabled && !window.confirm(`Disable ${who}? Their sessions end at once.`)) return;
    try {
      await api(`/api/v1/admin/users/${encodeURIComponent(u.id)}/${disabled ? "disable" : "enable"}`, { method: "POST" });
      banner(`${who} is ${disabled ? "disabled" : "enabled"}.`, "success");
    } catch (e) {
      if (e.status === 401) return signedOut();
      banner(`Could not change ${who}: ${e.message}`, "error");
    }
    await loadUsers();
  }

  // ------------------------------------------------------------------ admin

  async function loadAdmin() {
    let dash, sessions, mcp;
    try {
      [dash, sessions, mcp] = await Promise.all([api("/api/v1/admin/dashboard"), api("/api/v1/admin/sessions"), api("/api/v1/admin/mcp-sessions")]);
      showError("admin-error", null);
    } catch (e) {
      if (e.status === 401) return signedOut();
      showError("admin-error", e);
      $("dashboard").replaceChildren();
      $("sessions-table").querySelector("tbody").replaceChildren();
      $("mcp-sessions-table").querySelector("tbody").replaceChildren();
      $("admin").dataset.loaded = "1";
      return;
    }
    const num = (v) => (v === null || v === undefined ? "—" : String(v));
    const figures = [
      ["Users", num(dash.total_users)],
      ["Active users", num(dash.active_users_24h)],
      ["Disabled users", num(dash.disabled_users)],
      ["Browser sessions", num(dash.active_sessions)],
      ["MCP sessions", num(dash.mcp_sessions)],
      ["Tool calls", num(dash.tool_calls_24h)],
      ["Error rate", typeof dash.error_rate_24h === "number" ? `${(dash.error_rate_24h * 100).toFixed(1)} %` : "—"],
    ];
    $("dashboard").replaceChildren(...figures.map(([k, v]) => el("div", {}, el("dt", {}, k), el("dd", {}, v))));
    const ups = Array.isArray(dash.upstreams) ? dash.upstreams : [];
    // The other gateway instances' view of each upstream, as they last reported it.
    const others = Array.isArray(dash.replicas) ? dash.replicas.slice(1) : [];
    const elsewhere = (name) => others.flatMap((r) => (Array.isArray(r.upstreams) ? r.upstreams : [])
      .filter((o) => o.name === name)
      .map((o) => `${String(r.replica || "").slice(0, 8)}: ${o.state || "?"}${o.error ? ` (${o.error})` : ""}`));
    $("upstreams-table").querySelector("tbody").replaceChildren(...ups.map((u) => el("tr", { "data-server": u.name },
      el("th", { scope: "row" }, u.name || "—"),
      el("td", {}, u.state ? badge(String(u.state)) : "—"),
      el("td", {}, num(u.tools)),
      el("td", {}, u.error || "—"),
      el("td", {}, elsewhere(u.name).join(", ") || "—"),
      el("td", { class: "actions" }, el("button", {
        type: "button", "aria-label": `Restart ${u.name}`, onclick: () => restartServer(u.name),
      }, "Restart")))));
    show("upstreams-table", ups.length > 0);
    const recent = Array.isArray(dash.recent_users) ? dash.recent_users : [];
    $("recent-users").replaceChildren(...recent.map((u) => el("li", {}, u.email || u.id, " · ", time(u.last_login_at, "never"))));
    const list = listOf(sessions, "sessions");
    $("sessions-table").querySelector("tbody").replaceChildren(...list.map((x) => el("tr", { "data-session": x.id, "data-expired": x.expired ? "1" : "0" },
      el("th", { scope: "row" }, x.user_email || x.user_id),
      el("td", {}, time(x.created_at)),
      el("td", {}, time(x.expires_at), x.expired ? " " : null, x.expired ? badge("expired") : null),
      el("td", {}, x.user_agent || "—"),
      el("td", {}, x.ip || "—"),
      el("td", { class: "actions" }, el("button", {
        type: "button", class: "danger", "aria-label": `Revoke session of ${x.user_email || x.user_id}`,
        onclick: () => revokeSession(x),
      }, "Revoke")))));
    show("sessions-empty", list.length === 0);
    const VIA = { jwt: "provider token", introspected: "provider token", personal_access_token: "access token", oauth_access_token: "OAuth sign-in", session: "browser", anonymous: "anonymous" };
    const live = listOf(mcp, "sessions");
    $("mcp-sessions-table").querySelector("tbody").replaceChildren(...live.map((x) => {
      const who = x.user_email || x.user_id || "anonymous";
      const client = [x.client_name, x.client_version].filter(Boolean).join(" ") || "—";
      return el("tr", { "data-mcp-session": x.handle },
        el("th", { scope: "row" }, who),
        el("td", {}, client, x.protocol_version ? ` (${x.protocol_version})` : null),
        el("td", {}, VIA[x.via] || x.via || "—", x.agent ? " " : null, x.agent ? badge("agent") : null),
        el("td", {}, time(x.opened_at)),
        el("td", {}, time(x.last_active_at)),
        el("td", {}, Array.isArray(x.upstreams) && x.upstreams.length ? x.upstreams.join(", ") : "—"),
        el("td", { title: x.replica || "" }, x.replica ? x.replica.slice(0, 8) : "—", x.replica && mcp && x.replica === mcp.replica ? " (this one)" : null),
        el("td", { class: "actions" }, el("button", {
          type: "button", class: "danger", "aria-label": `End MCP session of ${who} (${client})`,
          onclick: () => endMcpSession(x, who),
        }, "End")));
    }));
    show("mcp-sessions-empty", live.length === 0);
    $("admin").dataset.loaded = "1";
  }

  // Reconnects a shared upstream on every replica: a new discovery session, and every client's
  // upstream session to it ended (their next call opens a new one).
  async function restartServer(name) {
    try {
      const r = await api(`/api/v1/admin/servers/${encodeURIComponent(name)}/restart`, { method: "POST" });
      const ended = r && typeof r.upstream_sessions_ended === "number" ? r.upstream_sessions_ended : 0;
      banner(`Restarted ${name} (${ended} client upstream session${ended === 1 ? "" : "s"} ended).`, "success");
    } catch (e) {
      if (e.status === 401) return signedOut();
      banner(`Could not restart ${name}: ${e.message}`, "error");
    }
    await loadAdmin();
  }

  async function endMcpSession(x, who) {
    try {
      const r = await api(`/api/v1/admin/mcp-sessions/${encodeURIComponent(x.handle)}`, { method: "DELETE" });
      banner(r && r.message ? `${r.message} (${who}).` : `Ended an MCP session of ${who}.`, "success");
    } catch (e) {
      if (e.status === 401) return signedOut();
      banner(`Could not end the MCP session: ${e.message}`, "error");
    }
    await loadAdmin();
  }

  async function revokeSession(x) {
    try {
      await api(`/api/v1/admin/sessions/${encodeURIComponent(x.id)}`, { method: "DELETE" });
      banner(`Ended a session of ${x.user_email || x.user_id}.`, "success");
    } catch (e) {
      if (e.status === 401) return signedOut();
      banner(`Could not end the session: ${e.message}`, "error");
    }
    await loadAdmin();
  }

  // ------------------------------------------------------------------ navigation

  const LOADERS = { connections: loadConnections, activity: () => loadActivity(false), tokens: loadTokens, servers: loadServers, users: loadUsers, admin: loadAdmin };

  function current() {
    const h = location.hash.replace(/^#/, "");
    return PAGES.includes(h) ? h : "connections";
  }

  async function route(focus) {
    if (!state.me) return;
    const page = current();
    for (const p of PAGES) show(p, p === page);
    for (const a of document.querySelectorAll("[data-nav]")) {
      if (a.dataset.nav === page) a.setAttribute("aria-current", "page");
      else a.removeAttribute("aria-current");
    }
    document.title = `${$(page + "-h").textContent} · Tessera`;
    if (focus) $(page + "-h").focus();
    $(page).dataset.loaded = "";
    await LOADERS[page]();
  }

  function signedOut() {
    state.me = null;
    show("loading", false);
    show("nav", false);
    show("who", false);
    for (const p of PAGES) show(p, false);
    const back = location.pathname + location.search + location.hash;
    $("signin-link").setAttribute("href", `/auth/login?return_to=${encodeURIComponent(back.startsWith("/") && !back.startsWith("//") ? back : "/")}`);
    show("signin", true);
  }

  async function start() {
    $("banner-close").addEventListener("click", () => show("banner", false));
    $("logout").addEventListener("click", async () => {
      try { await api("/auth/logout", { method: "POST" }); } catch (e) { /* signed out either way */ }
      location.assign("/");
    });
    $("activity-filter").addEventListener("submit", (ev) => { ev.preventDefault(); loadActivity(false); });
    $("activity-filter").addEventListener("reset", () => setTimeout(() => loadActivity(false), 0));
    $("activity-more").addEventListener("click", () => loadActivity(true));
    $("token-form").addEventListener("submit", createToken);
    $("personal-form").addEventListener("submit", addPersonal);
    $("p-header-add").addEventListener("click", addHeaderRow);
    $("token-done").addEventListener("click", forgetCreatedToken);
    $("token-copy").addEventListener("click", async () => {
      try { await navigator.clipboard.writeText($("token-value").value); banner("Token copied.", "success"); }
      catch (e) { $("token-value").select(); }
    });
    window.addEventListener("hashchange", () => route(true));

    try {
      state.me = await api("/api/v1/me");
    } catch (e) {
      if (e.status === 401) return signedOut();
      show("loading", false);
      banner(`Tessera could not be reached: ${e.message}`, "error");
      return;
    }
    state.admin = state.me.role === "admin";
    document.body.dataset.role = state.me.role || "user";
    for (const x of document.querySelectorAll("[data-admin]")) x.hidden = !state.admin;
    if (!state.admin) $("activity-scope").textContent = "Your own credential operations and tool calls, newest first.";
    else $("activity-scope").textContent = "Everyone's credential operations and tool calls, newest first (you are an administrator).";
    $("who-name").textContent = state.me.email || state.me.display_name || state.me.id;
    $("who-role").textContent = state.me.role || "user";
    show("loading", false);
    show("nav", true);
    show("who", true);
    await callbackBanner();
    await route(false);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
