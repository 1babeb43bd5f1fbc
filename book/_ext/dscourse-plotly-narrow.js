// Loaded right after plotly.min.js (book/_ext/vendor_assets.py). The notebooks' figures are drawn for a desktop
// column; on a narrow screen (a phone) this adapts each one as it is drawn (on any screen, a legend beside the plot
// that leaves it less than half the width goes below it), in the reader's browser, without
// touching the figure's data (so the notebooks' committed outputs stay what nbval compares):
// - a legend beside the plot moves below it, the right margin it needed is given back to the plot;
// - long category labels of a horizontal bar chart wrap onto more lines, long titles too;
// - the figure grows taller when legend and labels would leave the plot area too little height.
(function () {
  "use strict";
  if (!window.Plotly || !window.Plotly.newPlot) return;
  var NARROW = 600, MIN_PLOT_H = 240;

  function ems(s) {  // the width of a text in em: CJK characters one em, others about half
    var n = 0;
    for (var i = 0; i < s.length; i++) n += s.charCodeAt(i) > 0x2e80 ? 1 : 0.56;
    return n;
  }

  function wrap(text, maxEm) {  // break a plain text into lines of at most maxEm (at spaces where possible)
    if (!text || text.indexOf("<br") >= 0 || ems(text) <= maxEm) return text;
    var lines = [], line = "";
    var parts = text.match(/[\u2e80-\uffff]|[^\s\u2e80-\uffff]+|\s+/g) || [text];
    for (var i = 0; i < parts.length; i++) {
      var p = parts[i];
      // never break before a space or before closing punctuation
      if (line && ems(line + p) > maxEm && !/^\s+$/.test(p) && !/^[\uff09\uff0c\u3002\uff1b\uff1a\u3001\u201d)]/.test(p)) { lines.push(line.replace(/\s+$/, "")); line = ""; }
      if (!(line === "" && /^\s+$/.test(p))) line += p;
    }
    if (line) lines.push(line);
    return lines.join("<br>");
  }

  function titleText(t) { return t == null ? "" : (typeof t === "string" ? t : (t.text || "")); }

  function adapt(div, data, layout) {
    var width = div.getBoundingClientRect().width || window.innerWidth;
    if (window.innerWidth >= NARROW && width >= NARROW) return {layout: layout, extra: 0};
    layout = JSON.parse(JSON.stringify(layout || {}));
    var margin = layout.margin = layout.margin || {};
    var extra = 0;
    // the legend: below the plot, in rows
    var leg = layout.legend = layout.legend || {};
    var shown = (data || []).filter(function (t) { return t.showlegend !== false; }).length;
    if (layout.showlegend !== false && shown > 1) {
      leg.orientation = "h"; leg.x = 0; leg.xanchor = "left"; leg.font = Object.assign({}, leg.font || {}, {size: 11});
      leg.yref = "container"; leg.y = 0; leg.yanchor = "bottom";
      margin.r = Math.min(margin.r == null ? 80 : margin.r, 20);
      extra += 22 * Math.ceil(shown / 2);
    }
    if (margin.r != null && margin.r > 40) margin.r = 40;
    // the title: wrapped to the width, a little smaller
    var title = titleText(layout.title);
    if (title) {
      var size = Math.min(((layout.title && layout.title.font) || {}).size || 17, 14);
      var wrapped = wrap(title, (width - 30) / size);
      var lines = wrapped.split("<br>").length;
      layout.title = typeof layout.title === "object" ? layout.title : {};
      layout.title.text = wrapped;
      layout.title.font = Object.assign({}, layout.title.font || {}, {size: size});
      if (lines > 1) { margin.t = (margin.t == null ? 100 : margin.t) + (lines - 1) * (size + 4); extra += (lines - 1) * (size + 4); }
    }
    // a horizontal bar chart with long category labels: wrap them, and give them at most 45% of the width
    var horizontal = (data || []).some(function (t) { return t.orientation === "h" && t.type === "bar"; });
    if (horizontal && margin.l != null && margin.l > width * 0.45) {
      var cats = [];
      (data || []).forEach(function (t) {
        (t.y || []).forEach(function (c) { if (cats.indexOf(c) < 0) cats.push(c); });
      });
      var maxEm = (width * 0.45 - 10) / 11, maxLines = 1;
      var text = cats.map(function (c) {
        var w = wrap(String(c), maxEm); maxLines = Math.max(maxLines, w.split("<br>").length); return w;
      });
      layout.yaxis = Object.assign({}, layout.yaxis || {}, {tickmode: "array", tickvals: cats, ticktext: text,
                                                             tickfont: {size: 11}, automargin: true});
      margin.l = Math.round(width * 0.45);
      extra += (maxLines - 1) * 12 * cats.length;
    }
    return {layout: layout, extra: extra};
  }

  var newPlot = window.Plotly.newPlot;
  window.Plotly.newPlot = function (gd, data, layout, config) {
    var div = typeof gd === "string" ? document.getElementById(gd) : gd;
    var got = div ? adapt(div, data, layout) : {layout: layout, extra: 0};
    if (div && got.extra > 0 && !got.layout.height) {
      div.style.height = (div.getBoundingClientRect().height + got.extra) + "px";
    }
    var drawn = newPlot.call(this, gd, data, got.layout, config);
    if (div && drawn && drawn.then) {
      drawn.then(function () {
        var full = div._fullLayout, size = full && full._size;
        if (!size) return;
        // on any screen: a legend beside the plot that leaves it less than half the width goes below it
        var width = div.getBoundingClientRect().width, moved = null;
        if (size.w < 0.5 * width && full.showlegend && full.legend.orientation === "v") {
          moved = window.Plotly.relayout(div, {"legend.orientation": "h", "legend.x": 0, "legend.xanchor": "left",
            "legend.yref": "container", "legend.y": 0, "legend.yanchor": "bottom", "margin.r": 20});
        }
        if (!moved && got.layout === layout) return;
        (moved || Promise.resolve()).then(function () {  // too flat now: grow until the plot area has MIN_PLOT_H
          var s = div._fullLayout._size;
          if (s.h < MIN_PLOT_H && !got.layout.height) {
            div.style.height = (div.getBoundingClientRect().height + MIN_PLOT_H - s.h) + "px";
            window.Plotly.Plots.resize(div);
          }
        });
      });
    }
    return drawn;
  };
})();
