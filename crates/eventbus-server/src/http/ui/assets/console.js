// eventbus console: live refresh without layout shift. Every 2 s, while
// the tab is visible, the page is fetched again and each region marked
// data-live is brought up to date: when the new region has the same
// figures (elements with data-k) in the same order, only their text (and
// a progress or meter value) changes in place; otherwise the region is
// replaced. A live tail (tbody[data-tail]) gets the entries after its last
// one appended. Pages work without this script.
'use strict';
(function () {
  var INTERVAL_MS = 2000;
  var MAX_TAIL_ROWS = 500;
  var stopped = false;
  var status = document.getElementById('live-status');

  function say(text) {
    if (status && status.textContent !== text) status.textContent = text;
  }

  function keys(root) {
    return Array.prototype.slice.call(root.querySelectorAll('[data-k]'));
  }

  function update(el, fresh) {
    if (el.innerHTML === fresh.innerHTML) return;
    var a = keys(el), b = keys(fresh);
    var same = a.length > 0 && a.length === b.length && a.every(function (x, i) {
      return x.getAttribute('data-k') === b[i].getAttribute('data-k') && x.tagName === b[i].tagName;
    });
    if (same) {
      a.forEach(function (x, i) {
        var y = b[i];
        if (x.textContent !== y.textContent) x.textContent = y.textContent;
        ['value', 'max', 'class'].forEach(function (attr) {
          var v = y.getAttribute(attr);
          if (v !== null && x.getAttribute(attr) !== v) x.setAttribute(attr, v);
        });
      });
    }
    if (el.innerHTML !== fresh.innerHTML) el.innerHTML = fresh.innerHTML;
  }

  function fetchDoc(url) {
    return fetch(url, { credentials: 'same-origin', cache: 'no-store', headers: { 'x-eventbus-console': 'refresh' } })
      .then(function (res) {
        if (res.status === 401) {
          stopped = true;
          say('session ended: reload to log in');
          return null;
        }
        if (!res.ok) {
          say('refresh failed (HTTP ' + res.status + ')');
          return null;
        }
        return res.text().then(function (text) {
          return new DOMParser().parseFromString(text, 'text/html');
        });
      });
  }

  function refreshRegions() {
    var regions = document.querySelectorAll('[data-live]');
    if (regions.length === 0) return Promise.resolve();
    return fetchDoc(location.href).then(function (doc) {
      if (!doc) return;
      Array.prototype.forEach.call(regions, function (el) {
        var name = el.getAttribute('data-live');
        var fresh = Array.prototype.find.call(doc.querySelectorAll('[data-live]'), function (f) {
          return f.getAttribute('data-live') === name;
        });
        if (fresh) update(el, fresh);
      });
      say('updated ' + new Date().toLocaleTimeString());
    });
  }

  function refreshTail() {
    var body = document.querySelector('tbody[data-tail]');
    if (!body) return Promise.resolve();
    var url = body.getAttribute('data-tail') + '&after=' + encodeURIComponent(body.getAttribute('data-last'));
    return fetchDoc(url).then(function (doc) {
      if (!doc) return;
      var fresh = doc.getElementById('tail');
      if (!fresh) return;
      Array.prototype.slice.call(fresh.rows).forEach(function (row) {
        body.appendChild(document.importNode(row, true));
      });
      while (body.rows.length > MAX_TAIL_ROWS) body.deleteRow(0);
      body.setAttribute('data-last', fresh.getAttribute('data-last'));
      say('tail at ' + new Date().toLocaleTimeString());
    });
  }

  function tick() {
    if (stopped) return;
    var work = document.hidden ? Promise.resolve() : refreshRegions().then(refreshTail);
    work.catch(function () { say('offline: retrying'); }).then(function () {
      if (!stopped) setTimeout(tick, INTERVAL_MS);
    });
  }

  if (document.querySelector('[data-live], tbody[data-tail]')) setTimeout(tick, INTERVAL_MS);
})();
