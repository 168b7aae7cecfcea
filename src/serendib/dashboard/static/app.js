// Serendib dashboard: live workers, tasks, throughput, queue depth and latency of one task manager.
// Plain JavaScript, no build step and no outside resources, so it works offline.
// Everything shown from the server is set as text (never as HTML): task data is user input.
"use strict";

(() => {
  const STATES = ["pending", "assigned", "running", "succeeded", "failed", "cancelled"];
  const FINAL = new Set(["succeeded", "failed", "cancelled"]);
  const SORTS = ["submitted", "-submitted", "finished", "-finished", "id", "-id"];
  const SCANNED = "10,000"; // stored tasks one page of a search examines at most
  const $ = (id) => document.getElementById(id);

  // The token arrives once as ?token=...; keep it for this tab and take it out of the address bar.
  const query = new URLSearchParams(location.search);
  let token = sessionStorage.getItem("serendib-token") || "";
  if (query.has("token")) {
    token = query.get("token") || "";
    sessionStorage.setItem("serendib-token", token);
    query.delete("token");
    const rest = query.toString();
    history.replaceState(null, "", location.pathname + (rest ? "?" + rest : "") + location.hash);
  }

  const view = {
    state: "",
    worker: "",
    kind: "",
    search: "",
    searchIn: "id",
    sort: "submitted",
    limit: 50,
    cursors: [null], // cursor of each page visited; the last is the current page's
    next: null,
    truncated: false,
    selected: null,
    workerPage: null,
    tasksVersion: null,
    loading: false,
    again: false,
    workers: [],
    running: [],
    writable: false, // until /api/access says otherwise, no button that would be refused
    access: "unknown", // of /api/access: "unknown" (asked again with each live update), "asking", "known"
  };

  // --- helpers -------------------------------------------------------------------------------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined) continue;
      if (key === "class") node.className = value;
      else if (key === "title") node.title = value;
      else node.setAttribute(key, value);
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  // Make `node` look like `model`, keeping `node` and every descendant that is still there:
  // attributes and text are set where they differ, a child of another kind is replaced.
  function patch(node, model) {
    if (node.nodeType !== model.nodeType || node.nodeName !== model.nodeName) {
      node.replaceWith(model);
      return model;
    }
    if (node.nodeType !== Node.ELEMENT_NODE) {
      if (node.nodeValue !== model.nodeValue) node.nodeValue = model.nodeValue;
      return node;
    }
    for (const name of node.getAttributeNames()) if (!model.hasAttribute(name)) node.removeAttribute(name);
    for (const name of model.getAttributeNames()) {
      const value = model.getAttribute(name);
      if (name !== "style" && node.getAttribute(name) !== value) node.setAttribute(name, value);
    }
    // Styles through the CSSOM (the page's CSP refuses style attributes).
    if (node.style && node.style.cssText !== model.style.cssText) node.style.cssText = model.style.cssText;
    patchChildren(node, Array.from(model.childNodes));
    return node;
  }

  // Bring ``node``'s children up to date with ``models`` in place (see patch).
  function patchChildren(node, models) {
    const nodes = Array.from(node.childNodes);
    models.forEach((child, i) => (i < nodes.length ? patch(nodes[i], child) : node.append(child)));
    for (const extra of nodes.slice(models.length)) extra.remove();
  }

  // Draw a table body again in place: a row still shown (the same `key` attribute) keeps its
  // element, brought up to date. A click whose press and release straddle a redraw (a live
  // update came in between) then lands: a row replaced under the pointer swallowed it.
  function redraw(body, rows, key) {
    const shown = new Map();
    for (const tr of Array.from(body.children)) {
      if (tr.hasAttribute(key)) shown.set(tr.getAttribute(key), tr);
    }
    const kept = rows.map((row) => {
      const old = row.hasAttribute(key) ? shown.get(row.getAttribute(key)) : undefined;
      if (old === undefined) return row;
      shown.delete(row.getAttribute(key)); // a key shown twice: its second row is new
      return patch(old, row);
    });
    const keep = new Set(kept);
    for (const tr of Array.from(body.children)) if (!keep.has(tr)) tr.remove();
    // Those kept stay where they are (moving one under the pointer would lose its click too).
    kept.forEach((tr, i) => {
      const there = body.children[i];
      if (there !== tr) body.insertBefore(tr, there || null);
    });
  }

  function badge(state) {
    return el("span", { class: "state s-" + state, "data-state": state }, state);
  }

  function seconds(value) {
    if (value === null || value === undefined) return "–";
    if (value < 1) return (value * 1000).toFixed(0) + " ms";
    if (value < 120) return value.toFixed(1) + " s";
    if (value < 7200) return (value / 60).toFixed(1) + " min";
    return (value / 3600).toFixed(1) + " h";
  }

  function since(epoch) {
    return seconds(Math.max(Date.now() / 1000 - epoch, 0));
  }

  function clock(epoch) {
    if (!epoch) return "–";
    const date = new Date(epoch * 1000);
    const today = new Date().toDateString() === date.toDateString();
    return today ? date.toLocaleTimeString() : date.toLocaleString();
  }

  function percent(rate) {
    return rate === null || rate === undefined ? "–" : (rate * 100).toFixed(1) + " %";
  }

  function showError(message) {
    const bar = $("error");
    bar.textContent = message || "";
    bar.hidden = !message;
  }

  async function api(path, options) {
    const headers = Object.assign({ Accept: "application/json" }, (options || {}).headers);
    if (token) headers.Authorization = "Bearer " + token;
    const response = await fetch(path, Object.assign({}, options, { headers }));
    let body = null;
    try {
      body = await response.json();
    } catch (e) {
      body = null;
    }
    if (!response.ok) {
      const reason = body && body.error ? body.error : response.status + " " + response.statusText;
      throw new Error(reason);
    }
    return body;
  }

  // "workspace dash", but "manager" alone for a manager named so: a label the name repeats is left out.
  function fact(label, value) {
    const text = String(value);
    return text.toLowerCase().includes(label) ? text : label + " " + text;
  }

  // A SQLite store is a file: its path reads better than sqlite:////path (PostgreSQL keeps its URL).
  function storeText(url) {
    if (url === "sqlite://:memory:") return "store in memory";
    return "store " + (url.startsWith("sqlite:///") ? url.slice("sqlite:///".length) : url);
  }

  // --- summary, workers and charts (from live updates) ---------------------------------------

  function renderStats(stats) {
    const parts = [fact("workspace", stats.workspace), fact("manager", stats.manager) + (stats.running ? "" : " (stopped)"), storeText(stats.store)];
    // Records the store refused to save: rare, and worth a look in the report.
    if (stats.quarantined) parts.push(stats.quarantined.toLocaleString() + " quarantined (see the report)");
    $("where").textContent = parts.join(" · ");
    $("where").title = parts.join("\n");
    $("count-total").textContent = stats.total.toLocaleString();
    for (const state of STATES) {
      const card = document.querySelector('.card[data-state="' + state + '"] .value');
      card.textContent = (stats.counts[state] || 0).toLocaleString();
    }
    $("running-summary").textContent = (stats.counts.running || 0).toLocaleString() + " running, " + (stats.counts.assigned || 0).toLocaleString() + " assigned not started";
    $("success-rate").textContent = percent(stats.success_rate);
    $("rate").textContent = stats.throughput.per_s.toFixed(1);
    drawThroughput(stats.throughput);
    drawQueue(stats.queue);
    drawLatency(stats.latency);
  }

  function renderWorkers(workers, total) {
    view.workers = workers;
    const body = document.querySelector("#workers tbody");
    const rows = workers.map((w) => {
      const skills = Object.entries(w.skills).map(([k, v]) => k + " " + v).join(", ");
      return el(
        "tr",
        { "data-worker": w.name, class: (w.status === "lost" ? "lost" : "") + (w.name === view.workerPage ? " selected" : ""), tabindex: "0", title: "open " + w.name },
        el("td", {}, w.name),
        el("td", {}, skills),
        el("td", { class: "load" }, loadBar(w), " " + w.load + "/" + w.capacity),
        el("td", {}, el("span", { class: "status " + w.status }, w.status)),
        el("td", { class: "num" }, w.succeeded),
        el("td", { class: "num" }, percent(w.success_rate)),
      );
    });
    redraw(body, rows, "data-worker");
    const connected = workers.filter((w) => w.status === "connected").length;
    const suspect = workers.filter((w) => w.status === "suspect").length;
    const lost = workers.length - connected - suspect;
    $("worker-summary").textContent =
      connected + " connected" + (suspect ? ", " + suspect + " suspect" : "") +
      (lost ? ", " + lost + " lost" : "") +
      (total > workers.length ? " (first " + workers.length + " of " + total + ")" : "");
    const select = $("filter-worker");
    const names = workers.map((w) => w.name).sort();
    if (view.worker && !names.includes(view.worker)) names.unshift(view.worker);
    const current = Array.from(select.options).slice(1).map((o) => o.value);
    if (current.join("\n") !== names.join("\n")) {
      select.replaceChildren(el("option", { value: "" }, "all"), ...names.map((n) => el("option", { value: n }, n)));
      select.value = view.worker;
    }
    const kinds = Array.from(new Set(workers.flatMap((w) => w.kinds || []))).sort();
    const list = $("kinds");
    if (Array.from(list.options).map((o) => o.value).join("\n") !== kinds.join("\n")) {
      list.replaceChildren(...kinds.map((k) => el("option", { value: k })));
    }
    if (view.workerPage !== null) {
      const shown = workers.find((w) => w.name === view.workerPage);
      if (shown) renderWorkerFacts(shown);
    }
  }

  function loadBar(w) {
    const share = w.capacity ? Math.min(w.load / w.capacity, 1) : 0;
    const fill = el("span", { class: "fill" });
    fill.style.width = (share * 100).toFixed(0) + "%"; // CSSOM, which the page's CSP allows
    return el("span", { class: "bar" }, fill);
  }

  function svg(tag, attrs) {
    const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
    return node;
  }

  const WIDTH = 600;
  const HEIGHT = 150;

  function grid() {
    return [0.25, 0.5, 0.75, 1].map((fraction) => {
      const y = HEIGHT - fraction * (HEIGHT - 10);
      return svg("line", { x1: 0, x2: WIDTH, y1: y, y2: y, class: "grid" });
    });
  }

  function drawThroughput(series) {
    const n = series.succeeded.length;
    let max = 1;
    for (let i = 0; i < n; i++) max = Math.max(max, series.succeeded[i] + series.failed[i]);
    const step = WIDTH / n;
    const nodes = grid();
    for (let i = 0; i < n; i++) {
      const ok = series.succeeded[i];
      const bad = series.failed[i];
      if (!ok && !bad) continue;
      const hOk = (ok / max) * (HEIGHT - 10);
      const hBad = (bad / max) * (HEIGHT - 10);
      const x = i * step + 0.5;
      const w = Math.max(step - 1, 1);
      if (ok) nodes.push(svg("rect", { x, y: HEIGHT - hOk, width: w, height: hOk, class: "ok" }));
      if (bad) nodes.push(svg("rect", { x, y: HEIGHT - hOk - hBad, width: w, height: hBad, class: "bad" }));
    }
    const chart = $("chart");
    chart.replaceChildren(...nodes);
    chart.dataset.total = String(series.succeeded.reduce((a, b) => a + b, 0) + series.failed.reduce((a, b) => a + b, 0));
    $("chart-max").textContent = "· scale: " + max + " tasks/s";
  }

  // Lines through the known points of each series (null: nothing known, the line breaks there).
  function drawLines(chart, lines, max) {
    const nodes = grid();
    for (const line of lines) {
      const n = line.values.length;
      const step = WIDTH / Math.max(n - 1, 1);
      let points = [];
      const flush = () => {
        if (points.length === 1) points.push([points[0][0] + 2, points[0][1]]); // a dot-wide line
        if (points.length) nodes.push(svg("polyline", { points: points.map((p) => p.join(",")).join(" "), class: line.class }));
        points = [];
      };
      line.values.forEach((value, i) => {
        if (value === null || value === undefined) return flush();
        points.push([(i * step).toFixed(1), (HEIGHT - (value / max) * (HEIGHT - 10)).toFixed(1)]);
      });
      flush();
    }
    chart.replaceChildren(...nodes);
  }

  function last(values) {
    for (let i = values.length - 1; i >= 0; i--) if (values[i] !== null && values[i] !== undefined) return values[i];
    return null;
  }

  function drawQueue(series) {
    const max = Math.max(1, ...series.pending.filter((v) => v !== null));
    const chart = $("queue-chart");
    drawLines(chart, [{ values: series.pending, class: "queue" }], max);
    const now = last(series.pending);
    chart.dataset.latest = now === null ? "" : String(now);
    $("queue-now").textContent = now === null ? "" : "· now " + now.toLocaleString() + " · scale: " + max.toLocaleString();
  }

  function drawLatency(series) {
    const known = series.p95.filter((v) => v !== null);
    const max = Math.max(0.001, ...known);
    const chart = $("latency-chart");
    drawLines(chart, [{ values: series.p95, class: "p95" }, { values: series.p50, class: "p50" }], max);
    const p50 = last(series.p50);
    const p95 = last(series.p95);
    chart.dataset.p50 = p50 === null ? "" : String(p50);
    chart.dataset.p95 = p95 === null ? "" : String(p95);
    $("latency-now").textContent = p50 === null ? "· nothing ended lately" : "· now p50 " + seconds(p50) + ", p95 " + seconds(p95) + " · scale: " + seconds(max);
  }

  // --- running now ---------------------------------------------------------------------------

  async function loadRunning() {
    try {
      const page = await api("/api/tasks?state=running&limit=100");
      view.running = page.tasks;
      renderRunning();
    } catch (e) {
      showError("Could not load the running tasks: " + e.message);
    }
  }

  function renderRunning() {
    const rows = view.running.map((t) =>
      el(
        "tr",
        { "data-task-id": t.id },
        el("td", { class: "id" }, el("a", { href: "#", "data-open-task": t.id }, t.id)),
        el("td", {}, t.worker ? el("a", { href: "#", "data-open-worker": t.worker }, t.worker) : "–"),
        el("td", { class: "num" }, since(t.updated_at)),
        el("td", { class: "reason", title: t.reason }, t.reason),
      ),
    );
    if (!rows.length) rows.push(el("tr", { class: "empty" }, el("td", { colspan: "4" }, "nothing is running")));
    redraw(document.querySelector("#running tbody"), rows, "data-task-id");
  }

  // --- the task table ----------------------------------------------------------------------------

  function filtering() {
    return Boolean(view.state || view.worker || view.kind || view.search);
  }

  async function loadTasks() {
    if (view.loading) {
      view.again = true;
      return;
    }
    view.loading = true;
    // A page is on its way: paging on from the one shown would skip or repeat rows.
    $("prev").disabled = true;
    $("next").disabled = true;
    try {
      const params = new URLSearchParams({ limit: String(view.limit), sort: view.sort });
      if (view.state) params.set("state", view.state);
      if (view.worker) params.set("worker", view.worker);
      if (view.kind) params.set("kind", view.kind);
      if (view.search) params.set(view.searchIn === "text" ? "text" : "id", view.search);
      const after = view.cursors[view.cursors.length - 1];
      if (after !== null) params.set("after", after);
      const page = await api("/api/tasks?" + params.toString());
      renderTasks(page);
      showError("");
    } catch (e) {
      showError("Could not load tasks: " + e.message);
    } finally {
      view.loading = false;
      $("prev").disabled = view.cursors.length <= 1;
      $("next").disabled = view.next === null;
    }
    if (view.again) {
      view.again = false;
      loadTasks();
    }
  }

  function renderTasks(page) {
    const body = document.querySelector("#tasks tbody");
    const rows = page.tasks.map((t) => {
      const note = t.error && t.state !== "succeeded" ? t.error : t.reason;
      return el(
        "tr",
        { "data-task-id": t.id, "data-state": t.state, class: t.id === view.selected ? "selected" : null, tabindex: "0" },
        el("td", { class: "id" }, t.id),
        el("td", { class: "description", title: t.description }, t.description),
        el("td", {}, t.kind),
        el("td", { class: "num" }, t.difficulty),
        el("td", {}, badge(t.state)),
        el("td", { class: "num" }, t.attempt),
        el("td", {}, t.worker || "–"),
        el("td", { class: "reason", title: note }, note),
        el("td", { class: "time" }, clock(t.updated_at)),
      );
    });
    if (!rows.length) {
      const why = page.truncated
        ? "no match among the next " + SCANNED + " tasks searched: next → searches on"
        : "no tasks" + (filtering() ? " match" : " yet");
      rows.push(el("tr", { class: "empty" }, el("td", { colspan: "9" }, why)));
    }
    redraw(body, rows, "data-task-id");
    view.next = page.next_cursor;
    view.truncated = page.truncated;
    $("prev").disabled = view.cursors.length <= 1;
    $("next").disabled = page.next_cursor === null;
    // Unfiltered pages are full but for the last; a filtered one may stop short: count pages.
    const counted = !filtering();
    const start = (view.cursors.length - 1) * view.limit;
    let label = "";
    if (page.tasks.length) {
      label = counted
        ? "tasks " + (start + 1).toLocaleString() + "–" + (start + page.tasks.length).toLocaleString()
        : "page " + view.cursors.length + ": " + page.tasks.length + " task" + (page.tasks.length === 1 ? "" : "s");
    }
    if (page.truncated && page.tasks.length) label += " (search stopped after " + SCANNED + " tasks: next → goes on)";
    $("page-label").textContent = label;
  }

  function writeHash() {
    const hash = new URLSearchParams();
    if (view.state) hash.set("state", view.state);
    if (view.worker) hash.set("worker", view.worker);
    if (view.kind) hash.set("kind", view.kind);
    if (view.search) {
      hash.set("q", view.search);
      hash.set("in", view.searchIn);
    }
    if (view.sort !== "submitted") hash.set("sort", view.sort);
    if (view.workerPage !== null) hash.set("open", view.workerPage);
    const text = hash.toString();
    history.replaceState(null, "", location.pathname + location.search + (text ? "#" + text : ""));
  }

  function applyFilters(changes) {
    Object.assign(view, changes);
    view.cursors = [null];
    $("filter-state").value = view.state;
    $("filter-worker").value = view.worker;
    $("filter-kind").value = view.kind;
    $("search").value = view.search;
    $("search-in").value = view.searchIn;
    $("sort").value = view.sort;
    for (const card of document.querySelectorAll(".card[data-state]")) {
      card.classList.toggle("active", card.dataset.state === view.state);
    }
    writeHash();
    loadTasks();
  }

  function setFilter(state, worker) {
    applyFilters({ state, worker });
  }

  function search(text, where) {
    const changes = { search: text.trim(), searchIn: where };
    // Ids are found along the id index: in id order, a prefix is one range, at any size.
    if (changes.search && where === "id" && view.sort.endsWith("submitted")) changes.sort = "id";
    applyFilters(changes);
  }

  // --- one task ----------------------------------------------------------------------------------

  async function loadDetail(taskId) {
    try {
      const detail = await api("/api/tasks/" + encodeURIComponent(taskId));
      if (view.selected === taskId) renderDetail(detail);
    } catch (e) {
      if (view.selected === taskId) showError("Could not load task " + taskId + ": " + e.message);
    }
  }

  function renderDetail(d) {
    const t = d.task;
    const row = d.row;
    $("detail").hidden = false;
    $("detail-title").textContent = "Task " + t.id;
    $("detail-state").replaceChildren(badge(row.state), " ", t.description);
    const waiting = $("detail-waiting");
    waiting.hidden = !d.waiting_reason;
    waiting.textContent = d.waiting_reason ? "Why it waits: " + d.waiting_reason : "";
    const facts = [
      ["difficulty", t.difficulty],
      ["skill", t.required_skill],
      ["kind", t.kind],
      ["priority", t.priority],
      ["attempts", row.attempt + " of at most " + t.max_attempts],
      ["submitted", clock(row.submitted_at)],
      ["finished", clock(row.finished_at)],
      [FINAL.has(row.state) ? "took" : "so far", seconds(d.total_s)],
    ];
    if (t.labels && t.labels.length) facts.splice(3, 0, ["labels", t.labels.join(", ")]);
    if (t.group) facts.push(["group", t.group]);
    if (t.concurrency_key) facts.push(["concurrency key", t.concurrency_key]);
    if (t.delay_s) facts.push(["delay", seconds(t.delay_s)]);
    if (t.not_before) facts.push(["not before", clock(t.not_before)]);
    if (d.parents && d.parents.length) {
      facts.push(["parents" + (t.run_anyway ? " (runs anyway)" : ""), taskLinks(d.parents, "parent")]);
    }
    if (d.children && d.children.length) facts.push(["children", taskLinks(d.children, "child")]);
    if (row.error) facts.push(["error", row.error]);
    // In place, so a click on a parent's or child's link survives a live update's redraw.
    patchChildren($("detail-facts"), facts.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
    const attempts = d.attempts.map((a) =>
      el(
        "tr",
        { "data-attempt": a.attempt },
        el("td", {}, a.attempt + (a.escalated ? " ↑" : "")),
        el("td", {}, a.worker),
        el("td", {}, el("span", { class: "state s-" + a.outcome }, a.outcome)),
        el("td", { class: "num" }, seconds(a.queued_s)),
        el("td", { class: "num" }, seconds(a.run_s)),
        el("td", { class: "reason", title: a.error || a.reason }, a.error || a.reason),
      ),
    );
    if (!attempts.length) attempts.push(el("tr", { class: "empty" }, el("td", { colspan: "6" }, "not assigned yet")));
    redraw(document.querySelector("#attempts tbody"), attempts, "data-attempt");
    const hasOutput = d.output !== null && d.output !== undefined;
    $("output-title").hidden = !hasOutput;
    $("detail-output").hidden = !hasOutput;
    $("detail-output").textContent = hasOutput ? JSON.stringify(d.output, null, 2) : "";
    // Only where cancelling would be allowed: a read-only dashboard shows no button it refuses.
    $("cancel").hidden = FINAL.has(row.state) || !view.writable;
    // A failed or cancelled task may run again (its attempts so far stay in its history).
    $("retry").hidden = !(row.state === "failed" || row.state === "cancelled") || !view.writable;
  }

  // Links to other tasks (a task's parents and children): each opens that task.
  function taskLinks(ids, role) {
    const links = [];
    ids.forEach((id, i) => {
      if (i) links.push(", ");
      // Opened by the one click handler of the facts (links are patched in place: a
      // listener of its own would keep the id it was made with).
      links.push(el("a", { href: "#", "data-testid": role, "data-task": id }, id));
    });
    return el("span", {}, ...links);
  }

  function select(taskId) {
    view.selected = taskId;
    $("cancel-result").textContent = "";
    for (const tr of document.querySelectorAll("#tasks tbody tr")) {
      tr.classList.toggle("selected", tr.dataset.taskId === taskId);
    }
    if (taskId === null) {
      $("detail").hidden = true;
      return;
    }
    closeWorker();
    loadDetail(taskId);
  }

  async function cancelSelected() {
    const taskId = view.selected;
    if (taskId === null) return;
    try {
      const result = await api("/api/tasks/" + encodeURIComponent(taskId) + "/cancel", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: "{}",
      });
      $("cancel-result").textContent = result.cancelled ? "cancelled" : "already " + result.task.state;
      loadDetail(taskId);
      loadTasks();
    } catch (e) {
      $("cancel-result").textContent = "refused: " + e.message;
    }
  }

  async function retrySelected() {
    const taskId = view.selected;
    if (taskId === null) return;
    try {
      const result = await api("/api/tasks/" + encodeURIComponent(taskId) + "/retry", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: "{}",
      });
      $("cancel-result").textContent = result.retried ? "runs again" : "refused: " + result.reason;
      loadDetail(taskId);
      loadTasks();
    } catch (e) {
      $("cancel-result").textContent = "refused: " + e.message;
    }
  }

  // --- one worker --------------------------------------------------------------------------------

  function openWorker(name) {
    view.workerPage = name;
    view.selected = null;
    $("detail").hidden = true;
    for (const tr of document.querySelectorAll("#workers tbody tr")) {
      tr.classList.toggle("selected", tr.dataset.worker === name);
    }
    writeHash();
    loadWorker(name);
  }

  function closeWorker() {
    if (view.workerPage === null) return;
    view.workerPage = null;
    $("worker-page").hidden = true;
    for (const tr of document.querySelectorAll("#workers tbody tr.selected")) tr.classList.remove("selected");
    writeHash();
  }

  async function loadWorker(name) {
    try {
      const detail = await api("/api/workers/" + encodeURIComponent(name));
      if (view.workerPage === name) renderWorker(detail);
    } catch (e) {
      if (view.workerPage === name) showError("Could not load worker " + name + ": " + e.message);
    }
  }

  function renderWorkerFacts(w) {
    $("worker-title").textContent = "Worker " + w.name;
    const status = el("span", { class: "status " + w.status, "data-status": w.status }, w.status);
    const notes = {
      connected: "",
      suspect: " silent lately: given no new work, its attempts kept for a grace",
      lost: " no longer connected",
    };
    $("worker-status").replaceChildren(status, notes[w.status] || "");
    const skills = Object.entries(w.skills).map(([k, v]) => k + " " + v).join(", ");
    const facts = [
      ["skills", skills],
      ["labels", w.labels.length ? w.labels.join(", ") : "none"],
      ["kinds", w.kinds === null ? "any (it does not say)" : w.kinds.join(", ")],
      ["load", el("span", {}, loadBar(w), " " + w.load + " of " + w.capacity + " slots")],
      ["attempts", w.succeeded + " succeeded, " + w.failed + " failed (" + percent(w.success_rate) + ")"],
    ];
    $("worker-facts").replaceChildren(...facts.flatMap(([k, v]) => [el("dt", {}, k), el("dd", { "data-fact": k }, v)]));
  }

  function taskLink(t) {
    return el("a", { href: "#", "data-open-task": t.id }, t.id);
  }

  function renderWorker(d) {
    $("worker-page").hidden = false;
    renderWorkerFacts(d.worker);
    const current = d.current.map((t) =>
      el(
        "tr",
        { "data-task-id": t.id },
        el("td", { class: "id" }, taskLink(t)),
        el("td", {}, badge(t.state)),
        el("td", {}, since(t.updated_at)),
        el("td", { class: "reason", title: t.reason }, t.reason),
      ),
    );
    if (!current.length) current.push(el("tr", { class: "empty" }, el("td", { colspan: "4" }, "idle")));
    redraw(document.querySelector("#worker-current tbody"), current, "data-task-id");
    const recent = d.recent.map((t) =>
      el(
        "tr",
        { "data-task-id": t.id },
        el("td", { class: "id" }, taskLink(t)),
        el("td", {}, badge(t.state)),
        el("td", { class: "num" }, t.difficulty),
        el("td", { class: "time" }, clock(t.updated_at)),
      ),
    );
    if (!recent.length) recent.push(el("tr", { class: "empty" }, el("td", { colspan: "4" }, "no task yet")));
    redraw(document.querySelector("#worker-recent tbody"), recent, "data-task-id");
    const tallies = d.by_difficulty.map((row) => {
      const fill = el("span", { class: "fill" });
      fill.style.width = ((row.success_rate || 0) * 100).toFixed(0) + "%";
      return el(
        "tr",
        { "data-difficulty": row.difficulty },
        el("td", { class: "num" }, row.difficulty),
        el("td", { class: "num" }, row.succeeded),
        el("td", { class: "num" }, row.failed),
        el("td", {}, el("span", { class: "bar ok" }, fill), " " + percent(row.success_rate)),
      );
    });
    if (!tallies.length) tallies.push(el("tr", { class: "empty" }, el("td", { colspan: "4" }, "no attempt ended yet")));
    redraw(document.querySelector("#worker-difficulty tbody"), tallies, "data-difficulty");
  }

  // --- who may do what -----------------------------------------------------------------------

  async function loadAccess() {
    if (view.access !== "unknown") return;
    view.access = "asking";
    try {
      const access = await api("/api/access");
      view.access = "known";
      view.writable = access.writable;
      const shown = $("access");
      shown.hidden = access.writable;
      shown.textContent = access.writable ? "" : "read-only";
      shown.title = access.reason || "";
      if (view.selected !== null) loadDetail(view.selected);
    } catch (e) {
      view.access = "unknown"; // asked again with the next live update, not left read-only
      showError("Could not learn what this page may do: " + e.message);
    }
  }

  // --- schedules -------------------------------------------------------------------------------

  async function loadSchedules() {
    try {
      renderSchedules(await api("/api/schedules"));
    } catch (e) {
      showError("Could not load the schedules: " + e.message);
    }
  }

  function renderSchedules(schedules) {
    $("schedules-panel").hidden = schedules.length === 0;
    $("schedule-summary").textContent = schedules.length + (schedules.length === 1 ? " schedule" : " schedules");
    const rows = schedules.map((s) =>
      el(
        "tr",
        { "data-schedule": s.name },
        el("td", {}, s.name),
        el("td", {}, s.cron),
        el("td", {}, clock(s.last_fired)),
        el("td", {}, clock(s.next_at)),
      ),
    );
    redraw(document.querySelector("#schedules tbody"), rows, "data-schedule");
  }

  // --- live updates ------------------------------------------------------------------------------

  function connect() {
    const live = $("live");
    const source = new EventSource("/api/events" + (token ? "?token=" + encodeURIComponent(token) : ""));
    source.addEventListener("open", () => {
      live.textContent = "live";
      live.className = "live on";
    });
    source.addEventListener("error", () => {
      live.textContent = "reconnecting";
      live.className = "live off";
    });
    source.addEventListener("update", (event) => {
      const update = JSON.parse(event.data);
      renderStats(update.stats);
      renderWorkers(update.workers, update.workers_total);
      renderRunning(); // the times running go on
      document.body.dataset.updates = String(Number(document.body.dataset.updates || "0") + 1);
      loadAccess(); // if it is still unknown
      if (update.tasks_version !== view.tasksVersion) {
        view.tasksVersion = update.tasks_version;
        loadTasks();
        loadRunning();
        loadSchedules(); // a run fired is a new task
        if (view.selected !== null) loadDetail(view.selected);
        if (view.workerPage !== null) loadWorker(view.workerPage);
      }
    });
  }

  // --- wiring ----------------------------------------------------------------------------------

  function openFromLink(e) {
    const link = e.target.closest("a[data-open-task], a[data-open-worker]");
    if (!link) return false;
    e.preventDefault();
    e.stopPropagation();
    if (link.dataset.openTask !== undefined) select(link.dataset.openTask);
    else openWorker(link.dataset.openWorker);
    return true;
  }

  function start() {
    const initial = new URLSearchParams(location.hash.slice(1));
    const state = STATES.includes(initial.get("state")) ? initial.get("state") : "";
    const sort = SORTS.includes(initial.get("sort")) ? initial.get("sort") : "submitted";
    $("filter-state").addEventListener("change", (e) => applyFilters({ state: e.target.value }));
    $("filter-worker").addEventListener("change", (e) => applyFilters({ worker: e.target.value }));
    $("filter-kind").addEventListener("change", (e) => applyFilters({ kind: e.target.value.trim() }));
    $("sort").addEventListener("change", (e) => applyFilters({ sort: e.target.value }));
    $("search-in").addEventListener("change", (e) => search($("search").value, e.target.value));
    $("filters").addEventListener("submit", (e) => {
      e.preventDefault();
      search($("search").value, $("search-in").value);
    });
    $("search").addEventListener("search", (e) => search(e.target.value, $("search-in").value)); // the clear button
    $("search").addEventListener("keydown", (e) => {
      if (e.key === "Enter") {
        e.preventDefault();
        search(e.target.value, $("search-in").value);
      }
    });
    $("page-size").addEventListener("change", (e) => {
      view.limit = Number(e.target.value);
      view.cursors = [null];
      loadTasks();
    });
    for (const card of document.querySelectorAll(".card[data-state]")) {
      card.addEventListener("click", () => setFilter(card.dataset.state, view.worker));
    }
    $("prev").addEventListener("click", () => {
      if (view.cursors.length > 1 && !view.loading) {
        view.cursors.pop();
        loadTasks();
      }
    });
    $("next").addEventListener("click", () => {
      if (view.next !== null && !view.loading) {
        view.cursors.push(view.next);
        view.next = null;
        loadTasks();
      }
    });
    const tbody = document.querySelector("#tasks tbody");
    tbody.addEventListener("click", (e) => {
      const tr = e.target.closest("tr[data-task-id]");
      if (tr) select(tr.dataset.taskId);
    });
    tbody.addEventListener("keydown", (e) => {
      const tr = e.target.closest("tr[data-task-id]");
      if (tr && e.key === "Enter") select(tr.dataset.taskId);
    });
    for (const id of ["running", "worker-current", "worker-recent"]) {
      document.querySelector("#" + id + " tbody").addEventListener("click", openFromLink);
    }
    const workers = document.querySelector("#workers tbody");
    workers.addEventListener("click", (e) => {
      const tr = e.target.closest("tr[data-worker]");
      if (tr) openWorker(tr.dataset.worker);
    });
    workers.addEventListener("keydown", (e) => {
      const tr = e.target.closest("tr[data-worker]");
      if (tr && e.key === "Enter") openWorker(tr.dataset.worker);
    });
    $("detail-close").addEventListener("click", () => select(null));
    $("detail-facts").addEventListener("click", (event) => {
      const link = event.target.closest("a[data-task]");
      if (link === null) return;
      event.preventDefault();
      select(link.dataset.task);
    });
    $("worker-close").addEventListener("click", closeWorker);
    $("cancel").addEventListener("click", cancelSelected);
    $("retry").addEventListener("click", retrySelected);
    applyFilters({
      state,
      worker: initial.get("worker") || "",
      kind: initial.get("kind") || "",
      search: initial.get("q") || "",
      searchIn: initial.get("in") === "text" ? "text" : "id",
      sort,
    });
    if (initial.get("open")) openWorker(initial.get("open"));
    loadAccess();
    loadSchedules();
    connect();
  }

  start();
})();
