// bulletin preview page: tabs, sample subscriber, live reload over Server-Sent Events, and
// the mail captured by `bulletin sink`. Plain JavaScript, no build step. Everything shown
// from the server goes through textContent, never innerHTML: neither issue text nor the
// subjects and addresses of captured mail are trusted to be markup.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const body = document.body;

  // What the page currently shows: server run, build attempt, and build whose output is on
  // screen. The email frames only reload when the output changes (a failed build keeps it).
  const shown = {
    instance: body.dataset.instance,
    version: Number(body.dataset.version),
    output: Number(body.dataset.outputVersion),
  };
  let query = body.dataset.query || "";
  let refreshSeq = 0;

  // ---- tabs (WAI-ARIA tabs pattern: arrows, Home and End move between tabs) -------------
  const tabs = Array.from(document.querySelectorAll('[role="tab"]'));
  // Called with the tab's name ("captured", ...) when it is shown; filled in further down.
  const onTabShown = {};

  function selectTab(tab, focus) {
    for (const t of tabs) {
      const selected = t === tab;
      t.setAttribute("aria-selected", String(selected));
      t.tabIndex = selected ? 0 : -1;
      $(t.getAttribute("aria-controls")).hidden = !selected;
    }
    if (focus) tab.focus();
    const name = tab.id.replace(/^tab-/, "");
    history.replaceState(null, "", location.pathname + location.search + "#" + name);
    if (onTabShown[name]) onTabShown[name]();
  }

  tabs.forEach((tab, i) => {
    tab.addEventListener("click", () => selectTab(tab, false));
    tab.addEventListener("keydown", (e) => {
      const moves = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: tabs.length - 1 };
      if (!(e.key in moves)) return;
      e.preventDefault();
      selectTab(tabs[(moves[e.key] + tabs.length) % tabs.length], true);
    });
  });

  const initial = $("tab-" + location.hash.slice(1));
  if (initial && tabs.includes(initial)) selectTab(initial, false);

  // ---- email frames -----------------------------------------------------------------------
  const frames = Array.from(document.querySelectorAll(".email-frame"));

  function fitFrame(frame) {
    // Same origin (the email's sandbox allows it, without scripts), so the page can size the
    // frame to the email: no inner scrollbar eating into the 375 px mobile width.
    const doc = frame.contentDocument;
    if (!doc || !doc.documentElement) return;
    const height = Math.ceil(doc.documentElement.getBoundingClientRect().height);
    if (height > 0) frame.style.height = Math.max(height, 200) + "px";
    // Links open in a new tab instead of replacing the email inside the frame.
    for (const a of doc.querySelectorAll("a[href]")) {
      a.target = "_blank";
      a.rel = "noopener noreferrer";
    }
  }

  for (const frame of frames) {
    frame.addEventListener("load", () => fitFrame(frame));
    if (frame.contentDocument && frame.contentDocument.readyState === "complete") {
      fitFrame(frame);
    }
  }

  function reloadFrames() {
    // The version in the URL is only there to make every reload a distinct navigation.
    const src = "/email.html?" + query + (query ? "&" : "") + "v=" + shown.output;
    for (const frame of frames) frame.src = src;
  }

  // ---- status, error banner, summary ---------------------------------------------------------
  function clock(seconds) {
    return new Date(seconds * 1000).toLocaleTimeString();
  }

  function setStatus(text, kind) {
    const el = $("status");
    el.textContent = text;
    el.className = "status" + (kind ? " is-" + kind : "");
  }

  function el(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (className) node.className = className;
    return node;
  }

  function showError(summary) {
    const box = $("build-error");
    const err = summary.error;
    if (!err) {
      box.hidden = true;
      return;
    }
    const message = $("build-error-message");
    message.textContent = err.message || "";
    message.className = "message" + (err.bug ? " bug" : "");
    const list = $("build-error-problems");
    list.replaceChildren();
    for (const p of err.problems) {
      const item = el("li");
      if (p.location) {
        item.append(el("code", p.location), document.createTextNode(": "));
      }
      item.append(document.createTextNode(p.message));
      list.append(item);
    }
    $("build-error-hint").textContent = err.hint || "";
    $("build-error-keep").textContent = summary.email
      ? "Still showing the last good render (build " + summary.output_version + ")."
      : "Nothing to show until the issue builds once.";
    box.hidden = false;
  }

  function showSummary(summary) {
    const email = summary.email;
    showError(summary);
    if (summary.error) {
      setStatus("Build " + summary.version + " failed at " + clock(summary.finished_at), "error");
    } else {
      setStatus(
        "Live · built " + clock(summary.finished_at) + " in " + summary.duration_ms + " ms",
        "live",
      );
    }
    if (!email) return;
    $("subject").textContent = email.subject;
    document.title = "Preview: " + email.subject + " · bulletin";
    $("h-subject").textContent = email.subject;
    $("h-preheader").textContent = email.preheader || "(none)";
    $("h-from").textContent = email.from;
    $("h-reply-to").textContent = email.reply_to || "(none)";
    $("h-language").textContent = email.language;
    const size = $("h-html-size");
    size.textContent = email.html_kb + " KB";
    size.className = email.html_kb > email.gmail_clip_kb ? "size-over" : "";
    if (email.html_kb > email.gmail_clip_kb) {
      size.textContent += " (over " + email.gmail_clip_kb + " KB: Gmail clips it)";
    }
    $("h-text-size").textContent = email.text_kb + " KB";
    $("h-slots").textContent = email.slots.length ? email.slots.join(", ") : "(none)";

    const table = $("findings");
    const rows = table.tBodies[0];
    rows.replaceChildren();
    for (const p of email.problems) {
      const row = el("tr", null, p.severity);
      row.append(
        el("td", p.severity, "severity"),
        el("td", p.location || "", "where"),
        el("td", p.message, "what"),
        el("td", p.code),
      );
      rows.append(row);
    }
    table.hidden = email.problems.length === 0;
    $("findings-none").hidden = email.problems.length !== 0;
    const badge = $("findings-badge");
    const parts = [];
    if (email.errors) parts.push(email.errors + (email.errors === 1 ? " error" : " errors"));
    if (email.warnings) {
      parts.push(email.warnings + (email.warnings === 1 ? " warning" : " warnings"));
    }
    badge.textContent = parts.length ? "(" + parts.join(", ") + ")" : "";
    badge.className = "badge" + (email.errors ? " has-errors" : email.warnings ? " has-warnings" : "");
  }

  async function getText(url) {
    const response = await fetch(url, { cache: "no-store" });
    return { ok: response.ok, body: await response.text() };
  }

  async function refresh(withFrames) {
    const seq = ++refreshSeq;
    if (withFrames) reloadFrames();
    try {
      const [summary, text] = await Promise.all([
        getText("/summary.json?" + query),
        getText("/email.txt?" + query),
      ]);
      if (seq !== refreshSeq) return; // a newer refresh started meanwhile
      showSummary(JSON.parse(summary.body));
      $("text").textContent = text.body;
    } catch (err) {
      if (seq === refreshSeq) setStatus("Cannot reach the preview server: " + err, "error");
    }
  }

  // ---- sample subscriber ---------------------------------------------------------------------
  $("sample").addEventListener("submit", (e) => {
    e.preventDefault();
    query = new URLSearchParams(new FormData(e.target)).toString();
    history.replaceState(null, "", "?" + query + location.hash);
    refresh(true);
  });

  // ---- captured mail ------------------------------------------------------------------------
  // Polled every 2 s while its tab is on screen: simpler than watching a Maildir that may
  // not exist yet, and a sink in another process needs no link to the preview server.
  const CAPTURED_POLL_MS = 2000;
  const capturedPanel = $("panel-captured");
  const capturedRows = $("captured-list").tBodies[0];
  const capturedFrame = $("captured-frame");
  const capturedText = $("captured-text");
  const viewButtons = Array.from(document.querySelectorAll(".view-switch [data-view]"));
  const captured = { stamp: null, messages: [], selected: null, view: "html", loading: false };
  let viewSeq = 0;

  function capturedUrl(key, suffix) {
    return "/captured/" + encodeURIComponent(key) + suffix;
  }

  function byteSize(n) {
    return n < 1024 ? n + " B" : (n / 1024).toFixed(1) + " KB";
  }

  function localTime(iso) {
    return iso ? new Date(iso).toLocaleString() : "";
  }

  function shortTime(iso) {
    // Today's mail by time alone: a list of captures is mostly today's.
    const when = new Date(iso);
    return when.toDateString() === new Date().toDateString()
      ? when.toLocaleTimeString()
      : when.toLocaleString();
  }

  function showCapturedList(data) {
    // Rebuild the table only when something changed, so a poll does not reset the focus.
    const stamp = JSON.stringify([data.total, data.messages.map((m) => m.key)]);
    if (stamp === captured.stamp) return;
    captured.stamp = stamp;
    captured.messages = data.messages;
    const rows = data.messages.map((m) => {
      const row = el("tr");
      row.dataset.key = m.key;
      const when = el("time", shortTime(m.received));
      when.dateTime = m.received;
      when.title = localTime(m.received);
      const received = el("td", null, "received");
      received.append(when);
      // A button in each row: the message can be chosen with the keyboard too.
      const choose = el("button", m.subject || "(no subject)", "linklike");
      choose.type = "button";
      const subject = el("td", null, "subject");
      subject.append(choose);
      // The sink stores one copy per recipient: name the one this copy went to; the To
      // header (the same for every copy of a list send) is in the tooltip and the details.
      const to = el("td", m.delivered_to || m.to, "to");
      to.title = m.to;
      row.append(received, to, subject, el("td", byteSize(m.size), "size"));
      return row;
    });
    capturedRows.replaceChildren(...rows);
    const empty = data.total === 0;
    $("captured-empty").hidden = !empty;
    document.querySelector(".captured-list-box").hidden = empty;
    $("captured-count").textContent = empty
      ? ""
      : data.total > data.messages.length
        ? "Showing the newest " + data.messages.length + " of " + data.total + "."
        : data.total + (data.total === 1 ? " message." : " messages.");
    $("captured-badge").textContent = empty ? "" : "(" + data.total + ")";
    const still = data.messages.find((m) => m.key === captured.selected);
    if (still) markSelected();
    else if (captured.selected !== null) {
      captured.selected = null;
      $("captured-message").hidden = true;
    }
  }

  async function loadCaptured() {
    if (captured.loading) return;
    captured.loading = true;
    try {
      const response = await fetch("/captured.json", { cache: "no-store" });
      if (!response.ok) throw new Error("HTTP " + response.status);
      showCapturedList(await response.json());
      $("captured-error").hidden = true;
    } catch (err) {
      const box = $("captured-error");
      box.textContent = "Cannot list the captured mail: " + err;
      box.hidden = false;
    } finally {
      captured.loading = false;
    }
  }

  function markSelected() {
    for (const row of capturedRows.rows) {
      const button = row.querySelector("button");
      if (row.dataset.key === captured.selected) {
        row.classList.add("selected");
        button.setAttribute("aria-current", "true");
      } else {
        row.classList.remove("selected");
        button.removeAttribute("aria-current");
      }
    }
  }

  async function showView(view) {
    const key = captured.selected;
    captured.view = view;
    for (const b of viewButtons) b.setAttribute("aria-pressed", String(b.dataset.view === view));
    capturedFrame.hidden = view !== "html";
    capturedText.hidden = view === "html";
    if (key === null || view === "html") return;
    const seq = ++viewSeq;
    capturedText.textContent = "Loading…";
    const url = view === "text" ? capturedUrl(key, ".txt") : capturedUrl(key, ".eml") + "?headers";
    try {
      const text = await getText(url);
      if (seq === viewSeq) capturedText.textContent = text.body;
    } catch (err) {
      if (seq === viewSeq) capturedText.textContent = "Cannot load the message: " + err;
    }
  }

  function selectCaptured(key) {
    const m = captured.messages.find((x) => x.key === key);
    if (!m) return;
    captured.selected = key;
    markSelected();
    $("cm-subject").textContent = m.subject || "(no subject)";
    $("cm-from").textContent = m.from;
    $("cm-to").textContent = m.to || m.delivered_to;
    $("cm-date").textContent = m.date ? localTime(m.date) : "(none)";
    $("cm-message-id").textContent = m.message_id || "(none)";
    $("cm-raw").href = capturedUrl(key, ".eml");
    $("cm-download").href = capturedUrl(key, ".eml") + "?download";
    capturedFrame.style.height = "";
    capturedFrame.src = capturedUrl(key, ".html");
    $("captured-message").hidden = false;
    showView(captured.view);
  }

  capturedRows.addEventListener("click", (e) => {
    const row = e.target.closest("tr");
    if (row) selectCaptured(row.dataset.key);
  });
  for (const b of viewButtons) b.addEventListener("click", () => showView(b.dataset.view));
  capturedFrame.addEventListener("load", () => fitFrame(capturedFrame));

  onTabShown.captured = loadCaptured;
  setInterval(() => {
    if (!capturedPanel.hidden && document.visibilityState === "visible") loadCaptured();
  }, CAPTURED_POLL_MS);
  document.addEventListener("visibilitychange", () => {
    if (!capturedPanel.hidden && document.visibilityState === "visible") loadCaptured();
  });
  // Once at the start as well, for the count on the tab.
  loadCaptured();

  // ---- live reload ---------------------------------------------------------------------------
  function connect() {
    const source = new EventSource("/events");
    source.addEventListener("build", (e) => {
      const build = JSON.parse(e.data);
      const newServer = build.instance !== shown.instance;
      const newOutput = newServer || build.output_version !== shown.output;
      const changed = newOutput || build.version !== shown.version;
      shown.instance = build.instance;
      shown.version = build.version;
      shown.output = build.output_version;
      if (changed) refresh(newOutput);
    });
    source.addEventListener("error", () => {
      // EventSource reconnects by itself (the server asks for 1 s); just say so.
      setStatus("Disconnected from the preview server; reconnecting…", "error");
    });
    source.addEventListener("open", () => refresh(false));
  }

  connect();
})();
