/// The status page: one self-contained HTML document (no build step, no external assets).
/// It reads the token from its own URL (`?access_token=`), loads `/api/v1/overview`, then
/// follows `/api/v1/stream` and reloads the overview (at most twice a second) as entries
/// arrive, so cells change without a page reload.
enum StatusPage {
    static let html = #"""
    <!doctype html>
    <html lang="en">
    <head>
    <meta charset="utf-8">
    <meta name="viewport" content="width=device-width, initial-scale=1">
    <title>Relay status</title>
    <style>
      :root { font-family: system-ui, sans-serif; color: #1b1f24; background: #f6f8fa; }
      body { margin: 1.5rem; }
      h1 { font-size: 1.3rem; margin: 0 0 .3rem; }
      #meta { color: #57606a; font-size: .85rem; margin-bottom: 1rem; }
      table { border-collapse: collapse; background: #fff; box-shadow: 0 1px 2px #0002; }
      th, td { border: 1px solid #d0d7de; padding: .45rem .6rem; vertical-align: top; text-align: left; }
      th { background: #eef1f4; font-weight: 600; }
      th .heard { display: block; font-weight: 400; font-size: .75rem; color: #57606a; }
      th.agent.offline { color: #8c959f; }
      td.cell { min-width: 13rem; font-size: .85rem; }
      .state { display: inline-block; padding: .05rem .45rem; border-radius: .7rem; font-weight: 600; font-size: .75rem; }
      .state.ready { background: #dafbe1; color: #116329; }
      .state.progressing, .state.delivered, .state.waiting { background: #fff8c5; color: #7d4e00; }
      .state.failed, .state.failing { background: #ffebe9; color: #a40e26; }
      .state.unknown, .state.suspended, .state.terminating, .state.none { background: #eaeef2; color: #57606a; }
      .rev { font-family: ui-monospace, monospace; font-size: .75rem; display: block; margin-top: .2rem; }
      .msg { color: #57606a; font-size: .75rem; display: block; margin-top: .2rem; max-width: 22rem; overflow-wrap: anywhere; }
      #live.on { color: #116329; } #live.off { color: #a40e26; }
      .state.healthy { background: #dafbe1; color: #116329; }
      .state.held, .state.pending, .state.rolling, .state.soaking { background: #fff8c5; color: #7d4e00; }
      .state.halted, .state.done, .state.complete { background: #eaeef2; color: #57606a; }
      .state.halted { background: #ffebe9; color: #a40e26; }
      section.rollout { margin-top: 1.5rem; }
      section.rollout h2 { font-size: 1.05rem; margin: 0 0 .3rem; }
      .timeline { color: #57606a; font-size: .8rem; margin-bottom: .4rem; }
    </style>
    </head>
    <body>
    <h1>Relay: clusters × sources</h1>
    <div id="meta"><span id="live" class="off">connecting…</span> · <span id="updated"></span></div>
    <table id="matrix"><thead><tr><th>cluster</th></tr></thead><tbody></tbody></table>
    <div id="rollouts"></div>
    <script>
    "use strict";
    const token = new URLSearchParams(location.search).get("access_token") || "";
    const auth = token ? "access_token=" + encodeURIComponent(token) : "";
    const short = (rev) => rev ? rev.replace(/@sha1:([0-9a-f]{7})[0-9a-f]*/, "@$1") : "—";
    const ago = (iso) => {
      if (!iso) return "never";
      const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
      return s < 90 ? s + " s ago" : s < 5400 ? Math.round(s / 60) + " min ago" : Math.round(s / 3600) + " h ago";
    };
    function el(tag, attrs, ...children) {
      const node = document.createElement(tag);
      for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
      for (const c of children) node.append(c);
      return node;
    }
    function render(o) {
      const head = document.querySelector("#matrix thead tr");
      head.replaceChildren(el("th", {}, "cluster"), ...o.sources.map((s) => el("th", { "data-source": s }, s)));
      const body = document.querySelector("#matrix tbody");
      body.replaceChildren(...o.agents.map((a) => {
        const row = el("tr", { "data-agent": a.name });
        const head = el("th", { class: "agent " + (a.connected ? "online" : "offline") }, a.name,
          el("span", { class: "heard" }, a.connected ? "connected" : "offline · last heard " + ago(a.lastHeard)));
        const t = a.offline;
        if (t && (t.lastBundleExport || t.lastStatusImport)) {
          head.append(el("span", { class: "heard transfer" },
            "bundle " + (t.lastBundleExport ? "#" + t.lastBundleExport.sequence + " exported " + ago(t.lastBundleExport.createdAt) : "never exported")
            + " · status imported " + ago(t.lastStatusImport && t.lastStatusImport.importedAt)));
        }
        if (t && t.newestStatusAt) head.append(el("span", { class: "heard newest" }, "newest status " + ago(t.newestStatusAt).replace(" ago", " old")));
        row.append(head);
        for (const s of o.sources) {
          const c = o.cells.find((x) => x.agent === a.name && x.source === s);
          if (!c) { row.append(el("td", { class: "cell", "data-source": s }, el("span", { class: "state none" }, "not granted"))); continue; }
          row.append(el("td", { class: "cell", id: "cell-" + a.name + "-" + s, "data-source": s, "data-state": c.state },
            el("span", { class: "state " + c.state }, c.state),
            el("span", { class: "rev rev-delivered" }, "delivered " + short(c.delivered)),
            el("span", { class: "rev rev-applied" }, "applied " + short(c.applied)),
            el("span", { class: "msg" }, c.message || "")));
        }
        return row;
      }));
      document.getElementById("updated").textContent = "updated " + new Date(o.generatedAt).toLocaleTimeString();
      document.body.dataset.feedId = String(o.feedID);
    }
    // Rollouts (sources with waves or freezes): waves, each cluster's state, held cells with why and until when.
    function renderRollouts(list) {
      const root = document.getElementById("rollouts");
      root.replaceChildren(...list.map((r) => {
        const section = el("section", { class: "rollout", id: "rollout-" + r.source, "data-state": r.state },
          el("h2", {}, "Rollout of " + r.source + " ", el("span", { class: "rev" }, short(r.revision)), " ",
            el("span", { class: "state " + r.state }, r.state + (r.state === "complete" ? "" : " · wave " + Math.min(r.wave, r.waves.length) + " of " + r.waves.length))),
          el("div", { class: "timeline" }, "started " + ago(r.startedAt) + " · last change " + ago(r.updatedAt)
            + (r.failedAgent ? " · halted by " + r.failedAgent + ": " + r.message : "")));
        const table = el("table", {}, el("thead", {}, el("tr", {}, el("th", {}, "wave"), el("th", {}, "clusters"))));
        const body = el("tbody");
        for (const w of r.waves) {
          const cells = el("td");
          for (const a of r.agents.filter((x) => x.wave === w.number)) {
            const cell = el("div", { class: "cell", id: "rollout-" + r.source + "-" + a.agent, "data-state": a.state },
              el("strong", {}, a.agent), " ", el("span", { class: "state " + a.state }, a.state),
              el("span", { class: "rev" }, "given " + short(a.revision)));
            if (a.hold) cell.append(el("span", { class: "msg hold" }, a.hold.reason + (a.hold.until ? " (until " + new Date(a.hold.until).toISOString() + ")" : "")));
            if (a.release) cell.append(el("span", { class: "msg" }, "released by " + a.release.by + ": " + a.release.reason));
            if (a.message && !a.hold) cell.append(el("span", { class: "msg" }, a.message));
            cells.append(cell);
          }
          body.append(el("tr", { "data-wave": String(w.number) },
            el("th", {}, "wave " + w.number, el("span", { class: "heard" }, w.state + (w.soakSeconds ? " · soak " + w.soakSeconds + " s" : ""))), cells));
        }
        table.append(body);
        section.append(table);
        return section;
      }));
    }
    async function refreshRollouts() {
      try {
        const r = await fetch("/api/v1/rollouts?" + auth, { headers: token ? { Authorization: "Bearer " + token } : {} });
        if (r.ok) renderRollouts(await r.json());
      } catch (e) { /* the next poll tries again */ }
    }
    let pending = false, last = 0;
    async function refresh() {
      const wait = Math.max(0, 500 - (Date.now() - last));
      if (pending) return;
      pending = true;
      setTimeout(async () => {
        try {
          const r = await fetch("/api/v1/overview?" + auth, { headers: token ? { Authorization: "Bearer " + token } : {} });
          if (r.ok) render(await r.json());
        } finally { pending = false; last = Date.now(); }
      }, wait);
    }
    function follow() {
      const es = new EventSource("/api/v1/stream?since=" + (document.body.dataset.feedId || 0) + "&" + auth);
      const live = document.getElementById("live");
      es.onopen = () => { live.textContent = "live"; live.className = "on"; };
      es.addEventListener("status", () => refresh());
      es.onerror = () => { live.textContent = "reconnecting…"; live.className = "off"; };
    }
    refresh();
    refreshRollouts();
    setInterval(refreshRollouts, 2000);
    setTimeout(follow, 300);
    setInterval(refresh, 30000);
    </script>
    </body>
    </html>
    """#
}
