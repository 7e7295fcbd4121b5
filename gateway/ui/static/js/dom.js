// Building the page: h() makes an element, format helpers turn API values into text.

/** An element: h("a", {href: "#/", class: "x", onclick: fn}, "text", child, [more children]). */
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      element.addEventListener(name.slice(2), value);
    } else if (name === "style") {
      Object.assign(element.style, value);          // through the CSSOM: the page's policy allows no style attribute
    } else if (name === "class") {
      element.className = value;
    } else if (name === "value" || name === "checked" || name === "disabled" || name === "hidden") {
      element[name] = value;
    } else {
      element.setAttribute(name, value === true ? "" : String(value));
    }
  }
  append(element, children);
  return element;
}

function append(element, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(element, child);
    else element.append(child instanceof Node ? child : String(child));
  }
}

/** Replace what `container` holds; the element that had the focus gets it back by its data-key. */
export function replace(container, ...children) {
  const focused = document.activeElement;
  const key = focused && container.contains(focused) ? focused.getAttribute("data-key") : null;
  container.replaceChildren();
  append(container, children);
  if (key) {
    const again = container.querySelector(`[data-key="${CSS.escape(key)}"]`);
    if (again) again.focus();
  }
}

/** A state badge: <span class="state state-ready">ready</span>. */
export function badge(state) {
  const text = state === null || state === undefined ? "unknown" : String(state);
  return h("span", {class: `state state-${text.replace(/[^a-z_]/gi, "_")}`}, text.replace("_", " "));
}

/** A name for use in an API path: each part between '/' encoded, the slashes kept. */
export function pathOf(name) {
  return name.split("/").map(encodeURIComponent).join("/");
}

export function percent(fraction, digits = 2) {
  return fraction === null || fraction === undefined ? "–" : `${(fraction * 100).toFixed(digits)}%`;
}

export function number(value, digits = 2) {
  return value === null || value === undefined ? "–" : Number(value).toFixed(digits);
}

/** "97.5%" (or 97.5) as a number of per cents; null when absent. */
export function parsePercent(text) {
  if (text === null || text === undefined) return null;
  const value = parseFloat(String(text).replace("%", ""));
  return Number.isFinite(value) ? value : null;
}

export function debounce(action, milliseconds) {
  let timer = null;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => action(...args), milliseconds);
  };
}

/** Ask before something that cannot be undone: the page's <dialog>; resolves true when confirmed. */
export function confirmAction(text) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-text").textContent = text;
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "confirm"), {once: true});
    dialog.returnValue = "";
    dialog.showModal();
    document.getElementById("confirm-yes").focus();
  });
}
