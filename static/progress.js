// Progress bars fed by Server-Sent Events: the spawn-pending page follows a server start and
// moves on when it is ready (JupyterHub's event shape: {progress, message, ready, failed, url}).
"use strict";
(() => {
  const box = document.getElementById("spawn");
  if (!box) return;
  const bar = document.getElementById("spawn-bar");
  const fill = bar.firstElementChild;
  const msg = document.getElementById("spawn-message");
  const log = document.getElementById("spawn-log");
  const failed = document.getElementById("spawn-failed");
  const show = (ev) => {
    const pct = Math.max(0, Math.min(100, ev.progress || 0));
    fill.style.width = pct + "%";
    bar.setAttribute("aria-valuenow", String(pct));
    if (ev.message) {
      msg.textContent = ev.message;
      log.textContent += `[${pct}%] ${ev.message}\n`;
      log.scrollTop = log.scrollHeight;
    }
  };
  let done = false;
  const source = new EventSource(box.dataset.progressUrl);
  source.onmessage = (m) => {
    let ev;
    try { ev = JSON.parse(m.data); } catch { return; }
    show(ev);
    if (ev.ready) {
      done = true;
      source.close();
      window.location.assign(ev.url || box.dataset.readyUrl);
    } else if (ev.failed) {
      done = true;
      source.close();
      bar.classList.add("failed");
      failed.hidden = false;
    }
  };
  source.onerror = () => {
    if (done) return;
    // The browser reconnects by itself; say so, so a long wait never looks frozen.
    msg.textContent = "Connection to the hub interrupted; reconnecting…";
  };
})();

// Image builds on the admin's catalogue page: each bar follows its build and the page reloads
// when the build ends, so the table shows the new state.
(() => {
  for (const bar of document.querySelectorAll("[data-build-url]")) {
    const fill = bar.firstElementChild;
    const source = new EventSource(bar.dataset.buildUrl);
    source.onmessage = (m) => {
      let ev;
      try { ev = JSON.parse(m.data); } catch { return; }
      fill.style.width = Math.max(0, Math.min(100, ev.progress || 0)) + "%";
      bar.title = ev.message || "";
      if (ev.ready || ev.failed) {
        source.close();
        window.location.reload();
      }
    };
  }
})();
