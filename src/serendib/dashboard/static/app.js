// Serendib dashboard: live workers, tasks and throughput of one task manager.
// Plain JavaScript, no build step and no outside resources, so it works offline.
// Everything shown from the server is set as text (never as HTML): task data is user input.
"use strict";

(() => {
  const STATES = ["pending", "assigned", "running", "succeeded", "failed", "cancelled"];
  const FINAL = new Set(["succeeded", "failed", "cancelled"]);
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
    limit: 50,
    cursors: [null], // cursor of each page visited; the last is the current page's
    next: null,
    selected: null,
    tasksVersion: null,
    loading: false,
    again: false,
    workers: [],
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

  // --- summary, workers and chart (from live updates) ------------------------------------------

  function renderStats(stats) {
    $("where").textContent =
      "workspace " + stats.workspace + " · manager " + stats.manager +
      (stats.running ? "" : " (stopped)") + " · " + stats.store +
      // Records the store refused to save: rare, and worth a look in the report.
      (stats.quarantined ? " · " + stats.quarantined.toLocaleString() + " quarantined (see the report)" : "");
    $("count-total").textContent = stats.total.toLocaleString();
    for (const state of STATES) {
      const card = document.querySelector('.card[data-state="' + state + '"] .value');
      card.textContent = (stats.counts[state] || 0).toLocaleString();
    }
    $("success-rate").textContent = percent(stats.success_rate);
    $("rate").textContent = stats.throughput.per_s.toFixed(1);
    drawChart(stats.throughput);
  }

  function renderWorkers(workers, total) {
    view.workers = workers;
    const body = document.querySelector("#workers tbody");
    const rows = workers.map((w) => {
      const skills = Object.entries(w.skills).map(([k, v]) => k + " " + v).join(", ");
      const share = w.capacity ? Math.min(w.load / w.capacity, 1) : 0;
      const fill = el("span", { class: "fill" });
      fill.style.width = (share * 100).toFixed(0) + "%"; // CSSOM, which the page's CSP allows
      const bar = el("span", { class: "bar" }, fill);
      return el(
        "tr",
        { "data-worker": w.name, class: w.status === "lost" ? "lost" : null },
        el("td", {}, w.name),
        el("td", {}, skills),
        el("td", { class: "load" }, bar, " " + w.load + "/" + w.capacity),
        el("td", {}, el("span", { class: "status " + w.status }, w.status)),
        el("td", { class: "num" }, w.succeeded),
        el("td", { class: "num" }, percent(w.success_rate)),
      );
    });
    body.replaceChildren(...rows);
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
  }

  function svg(tag, attrs) {
    const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
    return node;
  }

  function drawChart(series) {
    const chart = $("chart");
    const width = 600;
    const height = 150;
    const n = series.succeeded.length;
    let max = 1;
    for (let i = 0; i < n; i++) max = Math.max(max, series.succeeded[i] + series.failed[i]);
    const step = width / n;
    const nodes = [];
    for (const fraction of [0.25, 0.5, 0.75, 1]) {
      const y = height - fraction * (height - 10);
      nodes.push(svg("line", { x1: 0, x2: width, y1: y, y2: y, class: "grid" }));
    }
    for (let i = 0; i < n; i++) {
      const ok = series.succeeded[i];
      const bad = series.failed[i];
      if (!ok && !bad) continue;
      const hOk = (ok / max) * (height - 10);
      const hBad = (bad / max) * (height - 10);
      const x = i * step + 0.5;
      const w = Math.max(step - 1, 1);
      if (ok) nodes.push(svg("rect", { x, y: height - hOk, width: w, height: hOk, class: "ok" }));
      if (bad) nodes.push(svg("rect", { x, y: height - hOk - hBad, width: w, height: hBad, class: "bad" }));
    }
    chart.replaceChildren(...nodes);
    chart.dataset.total = String(series.succeeded.reduce((a, b) => a + b, 0) + series.failed.reduce((a, b) => a + b, 0));
    $("chart-max").textContent = "· scale: " + max + " tasks/s";
  }

  // --- the task table ----------------------------------------------------------------------------

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
      const params = new URLSearchParams({ limit: String(view.limit) });
      if (view.state) params.set("state", view.state);
      if (view.worker) params.set("worker", view.worker);
      const after = view.cursors[view.cursors.length - 1];
      if (after !== null) params.set("after", String(after));
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
        el("td", {}, t.description),
        el("td", { class: "num" }, t.difficulty),
        el("td", {}, badge(t.state)),
        el("td", { class: "num" }, t.attempt),
        el("td", {}, t.worker || "–"),
        el("td", { class: "reason", title: note }, note),
        el("td", { class: "time" }, clock(t.updated_at)),
      );
    });
    if (!rows.length) {
      rows.push(el("tr", { class: "empty" }, el("td", { colspan: "8" }, "no tasks" + (view.state || view.worker ? " match the filter" : " yet"))));
    }
    body.replaceChildren(...rows);
    view.next = page.next_cursor;
    $("prev").disabled = view.cursors.length <= 1;
    $("next").disabled = page.next_cursor === null;
    const first = (view.cursors.length - 1) * view.limit;
    $("page-label").textContent = page.tasks.length
      ? "tasks " + (first + 1).toLocaleString() + "–" + (first + page.tasks.length).toLocaleString()
      : "";
  }

  function setFilter(state, worker) {
    view.state = state;
    view.worker = worker;
    view.cursors = [null];
    $("filter-state").value = state;
    $("filter-worker").value = worker;
    for (const card of document.querySelectorAll(".card[data-state]")) {
      card.classList.toggle("active", card.dataset.state === state);
    }
    const hash = new URLSearchParams();
    if (state) hash.set("state", state);
    if (worker) hash.set("worker", worker);
    const text = hash.toString();
    history.replaceState(null, "", location.pathname + location.search + (text ? "#" + text : ""));
    loadTasks();
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
    if (row.error) facts.push(["error", row.error]);
    $("detail-facts").replaceChildren(...facts.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
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
    document.querySelector("#attempts tbody").replaceChildren(...attempts);
    const hasOutput = d.output !== null && d.output !== undefined;
    $("output-title").hidden = !hasOutput;
    $("detail-output").hidden = !hasOutput;
    $("detail-output").textContent = hasOutput ? JSON.stringify(d.output, null, 2) : "";
    $("cancel").hidden = FINAL.has(row.state);
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
      document.body.dataset.updates = String(Number(document.body.dataset.updates || "0") + 1);
      if (update.tasks_version !== view.tasksVersion) {
        view.tasksVersion = update.tasks_version;
        loadTasks();
        if (view.selected !== null) loadDetail(view.selected);
      }
    });
  }

  // --- wiring ----------------------------------------------------------------------------------

  function start() {
    const initial = new URLSearchParams(location.hash.slice(1));
    const state = STATES.includes(initial.get("state")) ? initial.get("state") : "";
    $("filter-state").addEventListener("change", (e) => setFilter(e.target.value, view.worker));
    $("filter-worker").addEventListener("change", (e) => setFilter(view.state, e.target.value));
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
    $("detail-close").addEventListener("click", () => select(null));
    $("cancel").addEventListener("click", cancelSelected);
    setFilter(state, initial.get("worker") || "");
    connect();
  }

  start();
})();
