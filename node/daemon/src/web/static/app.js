// fedpeg web app: live parts of the pages. Each element with data-live
// follows a Server-Sent-Events stream of ready-escaped HTML fragments:
// "prepend" (blocks: new rows on top, keep data-keep rows) or "replace"
// (peg tracker). The browser reconnects by itself after a node restart and
// sends Last-Event-ID, so the block list resumes without a gap; if the
// stream is closed for good, a new one starts from the last height seen.
'use strict';
(function () {
  const status = (text) => {
    const s = document.getElementById('live-status');
    if (s) s.textContent = text;
  };

  function follow(el) {
    const base = el.dataset.live;
    const mode = el.dataset.liveMode || 'replace';
    let last = el.dataset.lastId || '';
    let source = null;
    const open = () => {
      let src = base;
      if (mode === 'prepend' && last !== '') {
        src += (src.includes('?') ? '&' : '?') + 'from_height=' + (Number(last) + 1);
      }
      source = new EventSource(src);
      source.onopen = () => status('live');
      source.onerror = () => {
        status('reconnecting…');
        if (source.readyState === EventSource.CLOSED) setTimeout(open, 3000);
      };
      source.addEventListener('block', (e) => {
        last = e.lastEventId || last;
        el.insertAdjacentHTML('afterbegin', e.data);
        const keep = Number(el.dataset.keep || 20);
        while (el.children.length > keep) el.lastElementChild.remove();
        const tip = document.getElementById('tip-height');
        if (tip) tip.textContent = last;
        const age = document.getElementById('tip-age');
        const first = el.querySelector('[data-time-ms]');
        if (age && first) age.dataset.timeMs = first.dataset.timeMs;
        tick();
      });
      source.addEventListener('track', (e) => {
        el.innerHTML = e.data;
      });
      source.addEventListener('cut', () => {
        source.close();
        setTimeout(open, 1000);
      });
    };
    open();
  }

  // "5 s ago" texts, kept current without asking the node.
  function tick() {
    const now = Date.now();
    for (const el of document.querySelectorAll('#tip-age[data-time-ms], td[data-time-ms].ago')) {
      const ms = Number(el.dataset.timeMs);
      if (!ms) continue;
      const s = Math.max(0, Math.floor((now - ms) / 1000));
      el.textContent = s < 60 ? s + ' s ago' : s < 3600 ? Math.floor(s / 60) + ' min ago' : Math.floor(s / 3600) + ' h ago';
    }
  }

  document.addEventListener('DOMContentLoaded', () => {
    document.querySelectorAll('[data-live]').forEach(follow);
    setInterval(tick, 1000);
  });
})();
