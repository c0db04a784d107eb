// The Map page's hover preview (a Streamlit components.v2 component, see pages/map_view.py).
//
// The map's ECharts tooltip shows text only, so this script watches that tooltip (its template marks the hovered
// image's index as data-dce-index) and shows the hovered image in a box above the pointer. Thumbnails come from the
// app's own server as data: URIs: the first hover of an image asks the server (a trigger value, which reruns only
// the preview's fragment), which answers with that image and its nearest points on the map; later hovers of those
// show at once from this cache.

const BOX_ID = "dce-map-hover-preview";
const ASK_DELAY_MS = 60; // the pointer sweeping over points asks only for the one it rests on

function previewBox() {
  let box = document.getElementById(BOX_ID);
  if (!box) {
    box = document.createElement("div");
    box.id = BOX_ID;
    box.setAttribute("data-testid", "map-hover-preview");
    Object.assign(box.style, {
      position: "fixed", zIndex: "100000", pointerEvents: "none", display: "none", padding: "4px",
      background: "#fff", border: "1px solid #bbb", borderRadius: "4px", boxShadow: "0 2px 8px rgba(0,0,0,.25)",
      font: "12px sans-serif", color: "#222", textAlign: "center", maxWidth: "220px",
    });
    const image = document.createElement("img");
    image.alt = "";
    image.style.display = "block";
    image.style.margin = "0 auto";
    const caption = document.createElement("div");
    caption.style.marginTop = "2px";
    caption.style.wordBreak = "break-all";
    box.append(image, caption);
    document.body.append(box);
  }
  return box;
}

function hide() {
  const box = document.getElementById(BOX_ID);
  if (box) box.style.display = "none";
}

function place(box, pointer, map) {
  // above the pointer, centred on it: ECharts' own tooltip sits below the point, so both stay readable. Where that
  // would rise above the map (over the page's controls, or out of the window), beside the pointer instead.
  const margin = 8, gap = 18, aside = 30;
  const { width, height } = box.getBoundingClientRect();
  const ceiling = Math.max(margin, map ? map.getBoundingClientRect().top : margin);
  let left = pointer.x - width / 2;
  let top = pointer.y - height - gap;
  if (top < ceiling) {
    top = Math.max(ceiling, pointer.y - height / 2);
    const roomRight = pointer.x + aside + width <= window.innerWidth - margin;
    left = roomRight ? pointer.x + aside : pointer.x - aside - width;
  }
  box.style.left = `${Math.max(margin, Math.min(left, window.innerWidth - width - margin))}px`;
  box.style.top = `${Math.max(margin, Math.min(top, window.innerHeight - height - margin))}px`;
}

function show(shared) {
  const index = shared.hovered;
  if (index === null) return hide();
  const box = previewBox();
  const [image, caption] = box.children;
  const uri = shared.thumbs.get(index);
  if (uri === undefined) {
    image.style.display = "none";
    image.removeAttribute("src");
    caption.textContent = "loading…";
  } else {
    image.style.display = "block";
    if (image.getAttribute("src") !== uri) {
      image.onload = () => {
        // small images (8-px digits, 32-px CIFAR) are scaled up with sharp pixels; large ones shrink smoothly
        image.style.imageRendering = image.naturalWidth < shared.size ? "pixelated" : "auto";
        place(box, shared.pointer, shared.map);
      };
      image.src = uri;
    }
    image.style.width = `${shared.size}px`;
    caption.textContent = shared.captions.get(index) ?? "";
  }
  box.style.display = "block";
  place(box, shared.pointer, shared.map);
}

function tooltipRoot(marker, host) {
  // the tooltip's own box: the positioned ancestor ECharts shows and hides
  let root = marker;
  while (root.parentElement && root.parentElement !== host && getComputedStyle(root).position !== "absolute") {
    root = root.parentElement;
  }
  return root;
}

function hoveredIndex(host) {
  const marker = host.querySelector("[data-dce-index]");
  if (!marker) return null;
  const style = getComputedStyle(tooltipRoot(marker, host));
  if (style.display === "none" || style.visibility === "hidden" || Number(style.opacity) === 0) return null;
  const index = Number(marker.getAttribute("data-dce-index"));
  return Number.isInteger(index) ? index : null;
}

function follow(shared, host) {
  if (!shared.pointer) return;
  const index = hoveredIndex(host);
  if (index === null) {
    if (shared.hovered !== null) {
      shared.hovered = null;
      hide();
    }
    return;
  }
  shared.hovered = index;
  show(shared);
  if (!shared.thumbs.has(index)) {
    clearTimeout(shared.askTimer);
    shared.askTimer = setTimeout(() => {
      if (shared.hovered === index && !shared.thumbs.has(index)) shared.ask("hover", index);
    }, ASK_DELAY_MS);
  }
}

function attach(shared, chart) {
  const host = document.querySelector(`.st-key-${chart}`);
  if (!host || !host.querySelector("canvas")) {
    // ECharts draws after this component mounts: look again shortly
    shared.retry = setTimeout(() => attach(shared, chart), 100);
    return;
  }
  shared.map = host;
  if (host.dceHoverAttached) return;
  host.dceHoverAttached = true;
  host.addEventListener("mousemove", (event) => {
    shared.pointer = { x: event.clientX, y: event.clientY };
    follow(shared, host);
  });
  host.addEventListener("mouseleave", () => {
    shared.pointer = null;
    shared.hovered = null;
    hide();
  });
  // the tooltip changes after the pointer moves (ECharts hit-tests on its own listener): follow its changes too
  new MutationObserver(() => follow(shared, host)).observe(host, {
    subtree: true, childList: true, characterData: true, attributes: true, attributeFilter: ["style"],
  });
}

export default function ({ data, setTriggerValue }) {
  const shared = (window.dceMapHover ??= { thumbs: new Map(), captions: new Map(), hovered: null });
  if (shared.run !== data.run) {
    shared.thumbs.clear();
    shared.captions.clear();
    shared.run = data.run;
  }
  shared.ask = setTriggerValue;
  shared.size = data.size;
  for (const [index, uri] of Object.entries(data.thumbs)) shared.thumbs.set(Number(index), uri);
  for (const [index, text] of Object.entries(data.captions)) shared.captions.set(Number(index), text);
  clearTimeout(shared.retry);
  attach(shared, data.chart);
  if (shared.hovered !== null) show(shared);
  return () => {
    clearTimeout(shared.retry);
    clearTimeout(shared.askTimer);
    shared.hovered = null;
    hide();
  };
}
