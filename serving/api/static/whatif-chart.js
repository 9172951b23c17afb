// A what-if chart with uPlot (static/vendor): the score against one feature's values, one curve
// per version, and the baseline (the form's own value and score) marked as a point and a line.
"use strict";

(function () {
  const BASELINE = "#b3261e";
  const HEIGHT = 220;

  /**
   * Draw into `container` and answer the uPlot instance (also kept as `container.chart`).
   * spec: {name, numeric, yLabel, yRange|null, curves: [{label, color, dash, values, scores}],
   *        baseline: {value, score}|null}
   * Numeric features share one sorted x axis (each curve's values and the baseline's); other
   * features (allowed strings, booleans) are categories at x = 0, 1, 2 ... labelled by value.
   */
  function drawWhatIf(container, spec) {
    const key = (value) => (spec.numeric ? value : JSON.stringify(value));
    const values = [];
    const seen = new Map();
    const add = (value) => {
      if (value === null || value === undefined || seen.has(key(value))) return;
      seen.set(key(value), true);
      values.push(value);
    };
    spec.curves.forEach((curve) => curve.values.forEach(add));
    if (spec.baseline) add(spec.baseline.value);
    if (spec.numeric) values.sort((a, b) => a - b);
    const position = new Map(values.map((value, i) => [key(value), i]));
    const xs = spec.numeric ? values.slice() : values.map((_, i) => i);

    const column = (pairs) => {
      const ys = xs.map(() => null);
      for (const [value, score] of pairs) if (position.has(key(value))) ys[position.get(key(value))] = score;
      return ys;
    };
    const data = [xs];
    for (const curve of spec.curves) data.push(column(curve.values.map((v, i) => [v, curve.scores[i]])));
    const baselineAt = spec.baseline && position.has(key(spec.baseline.value)) ? spec.baseline : null;
    data.push(column(baselineAt ? [[baselineAt.value, baselineAt.score]] : []));

    const label = (x) => (spec.numeric ? window.maas.show(x) : window.maas.show(values[x]));
    const series = [{ label: spec.name, value: (u, x) => (x === null ? "" : label(x)) }];
    for (const curve of spec.curves) {
      series.push({
        label: curve.label,
        stroke: curve.color,
        width: 2,
        dash: curve.dash,
        spanGaps: true,
        paths: spec.numeric ? undefined : () => null,
        points: { show: !spec.numeric || curve.values.length <= 30, size: spec.numeric ? 5 : 9, fill: curve.color },
      });
    }
    series.push({
      label: "the form's value",
      stroke: BASELINE,
      width: 0,
      paths: () => null,
      points: { show: true, size: 12, stroke: BASELINE, fill: BASELINE },
    });

    const baselineLine = (u) => {
      if (!baselineAt) return;
      const x = u.valToPos(spec.numeric ? baselineAt.value : position.get(key(baselineAt.value)), "x", true);
      const ctx = u.ctx;
      ctx.save();
      ctx.strokeStyle = BASELINE;
      ctx.lineWidth = 1.5 * devicePixelRatio;
      ctx.setLineDash([5 * devicePixelRatio, 4 * devicePixelRatio]);
      ctx.beginPath();
      ctx.moveTo(x, u.bbox.top);
      ctx.lineTo(x, u.bbox.top + u.bbox.height);
      ctx.stroke();
      ctx.restore();
    };

    const xAxis = { label: spec.name, stroke: "#333" };
    const xScale = { time: false };
    if (!spec.numeric) {
      xScale.range = () => [-0.5, values.length - 0.5];
      xAxis.splits = () => xs;
      xAxis.values = (u, splits) => splits.map((i) => (Number.isInteger(i) ? label(i) : ""));
    } else if (xs.length === 1) {
      xScale.range = () => [xs[0] - 1, xs[0] + 1];
    }
    const yScale = spec.yRange ? { range: () => spec.yRange } : {};
    const options = {
      width: Math.max(200, container.clientWidth),
      height: HEIGHT,
      series,
      scales: { x: xScale, y: yScale },
      axes: [xAxis, { label: spec.yLabel, stroke: "#333", size: 56 }],
      legend: { live: false },
      cursor: { drag: { x: false, y: false } },
      hooks: { draw: [baselineLine] },
    };
    const chart = new uPlot(options, data, container);
    container.chart = chart;
    container.categories = spec.numeric ? null : values; // what x = 0, 1, 2 ... stand for
    if (window.ResizeObserver) {
      let width = container.clientWidth;
      new ResizeObserver(() => {
        if (container.clientWidth !== width && container.clientWidth > 0) {
          width = container.clientWidth;
          chart.setSize({ width: Math.max(200, width), height: HEIGHT });
        }
      }).observe(container);
    }
    return chart;
  }

  window.maas.drawWhatIf = drawWhatIf;
})();
