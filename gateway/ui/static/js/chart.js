// A small line chart in SVG: points (x in seconds before now, y a value or null for a gap) over a fixed span,
// with its largest value and the latest one written beside it.
const NS = "http://www.w3.org/2000/svg";
const WIDTH = 300;
const HEIGHT = 80;

function svg(tag, attributes) {
  const element = document.createElementNS(NS, tag);
  for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, String(value));
  return element;
}

/**
 * A <figure> with `title`; update(points) redraws it. `format(value)` writes a value; `span`: the seconds shown.
 */
export function lineChart(title, format, span) {
  const latest = document.createElement("span");
  const caption = document.createElement("figcaption");
  const name = document.createElement("span");
  name.textContent = title;
  caption.append(name, latest);
  const drawing = svg("svg", {viewBox: `0 0 ${WIDTH} ${HEIGHT}`, preserveAspectRatio: "none", role: "img"});
  const figure = document.createElement("figure");
  figure.dataset.chart = title;
  latest.className = "latest";
  figure.append(caption, drawing);

  function update(points) {
    drawing.replaceChildren();
    const values = points.filter((point) => point.y !== null && point.y !== undefined);
    const largest = values.length ? Math.max(...values.map((point) => point.y)) : null;
    const top = largest || 1;
    drawing.append(svg("line", {x1: 0, y1: HEIGHT - 1, x2: WIDTH, y2: HEIGHT - 1, stroke: "#c3cad4"}));
    const runs = [[]];                  // stretches without a gap
    for (const point of points) {
      if (point.y === null || point.y === undefined) {
        if (runs[runs.length - 1].length) runs.push([]);
        continue;
      }
      runs[runs.length - 1].push([((point.x + span) / span) * WIDTH, HEIGHT - 2 - (point.y / top) * (HEIGHT - 14)]);
    }
    for (const run of runs) {
      if (run.length === 1) {
        drawing.append(svg("circle", {cx: run[0][0].toFixed(1), cy: run[0][1].toFixed(1), r: 2, fill: "#1f5fbf"}));
      } else if (run.length > 1) {
        const path = run.map(([x, y], index) => `${index ? "L" : "M"}${x.toFixed(1)},${y.toFixed(1)}`).join(" ");
        drawing.append(svg("path", {d: path, fill: "none", stroke: "#1f5fbf", "stroke-width": 1.5,
                                    "vector-effect": "non-scaling-stroke"}));
      }
    }
    const label = svg("text", {x: 2, y: 10, "font-size": 9, fill: "#5b6675"});
    label.textContent = `max ${format(largest)}`;
    drawing.append(label);
    const last = values.length ? values[values.length - 1].y : null;
    latest.textContent = format(last);
    drawing.setAttribute("aria-label", `${title} over the last ${span / 60} minutes: now ${format(last)}, ` +
                         `at most ${format(largest)}`);
  }
  update([]);
  return {figure, update};
}
