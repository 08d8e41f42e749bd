// Cell outputs (codeinterp.outputs.output_to_dict shapes) as DOM elements.
//   {"type": "stream", "name": "stdout"|"stderr", "text"}
//   {"type": "display"|"result", "data": {mime: str (base64 for images)}, "metadata"}
// Text is always set through textContent; HTML outputs only ever live inside a sandboxed
// iframe without scripts; images only from base64 data URLs.

import { applyCarriageReturns, renderMarkdown, stripAnsi } from "./markdown.js";

const IMAGE_TYPES = ["image/png", "image/jpeg", "image/gif", "image/webp"];
const BASE64 = /^[A-Za-z0-9+/=\s]*$/;

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/**
 * Append `output` to `container`. Consecutive stream outputs of the same stream share one
 * element, so a cell's printed lines read as one block.
 */
export function appendOutput(container, output) {
  if (!output || typeof output !== "object") return;
  if (output.type === "stream") {
    const name = output.name === "stderr" ? "stderr" : "stdout";
    let block = container.lastElementChild;
    if (!block || !block.classList.contains("stream") || block.dataset.stream !== name) {
      block = el("pre", `output stream ${name}`);
      block.dataset.stream = name;
      block.dataset.raw = "";
      if (name === "stderr") block.setAttribute("aria-label", "Standard error");
      container.append(block);
    }
    block.dataset.raw += String(output.text ?? "");
    block.textContent = applyCarriageReturns(stripAnsi(block.dataset.raw));
    return;
  }
  container.append(renderDisplay(output));
}

function renderDisplay(output) {
  const data = output.data && typeof output.data === "object" ? output.data : {};
  const wrapper = el("div", `output display${output.type === "result" ? " result" : ""}`);
  const plain = typeof data["text/plain"] === "string" ? data["text/plain"] : "";

  for (const mime of IMAGE_TYPES) {
    const payload = data[mime];
    if (typeof payload === "string" && BASE64.test(payload)) {
      const img = el("img", "plot");
      img.src = `data:${mime};base64,${payload.replace(/\s/g, "")}`;
      img.alt = plain && !plain.startsWith("<") ? plain : "Plot produced by the code";
      if (plain) img.title = plain;
      const metadata = (output.metadata && output.metadata[mime]) || {};
      if (Number(metadata.width) > 0) img.width = Number(metadata.width);
      if (Number(metadata.height) > 0) img.height = Number(metadata.height);
      wrapper.append(img);
      return wrapper;
    }
  }
  if (typeof data["image/svg+xml"] === "string") {
    // As an image, an SVG runs no script and loads nothing.
    const img = el("img", "plot");
    img.src = `data:image/svg+xml;charset=utf-8,${encodeURIComponent(data["image/svg+xml"])}`;
    img.alt = plain || "SVG image produced by the code";
    wrapper.append(img);
    return wrapper;
  }
  if (typeof data["text/html"] === "string") {
    wrapper.append(sandboxedHtml(data["text/html"]));
    return wrapper;
  }
  if (typeof data["text/markdown"] === "string") {
    const md = el("div", "md");
    md.innerHTML = renderMarkdown(data["text/markdown"]); // escaped by renderMarkdown
    wrapper.append(md);
    return wrapper;
  }
  if (data["application/json"] !== undefined) {
    const value = data["application/json"];
    let text = value;
    try {
      text = JSON.stringify(typeof value === "string" ? JSON.parse(value) : value, null, 2);
    } catch {
      text = String(value);
    }
    wrapper.append(el("pre", "text", text));
    return wrapper;
  }
  if (plain) {
    wrapper.append(el("pre", "text", stripAnsi(plain)));
    return wrapper;
  }
  const kinds = Object.keys(data).join(", ") || "empty";
  wrapper.append(el("pre", "text muted", `[${kinds} output]`));
  return wrapper;
}

// The iframe's own document: no script (the sandbox forbids it anyway), no network at all.
const FRAME_HEAD =
  '<!doctype html><html><head><meta charset="utf-8">' +
  "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; " +
  "style-src 'unsafe-inline'; img-src data:\">" +
  "<style>body{margin:0;padding:4px;font:13px/1.4 system-ui,sans-serif;color:#1f2328}" +
  "table{border-collapse:collapse;border:0}th,td{padding:3px 8px;border:0;" +
  "border-bottom:1px solid #d0d7de;" +
  "text-align:right}thead th{border-bottom:2px solid #8c959f}tbody tr:nth-child(odd)" +
  "{background:#f6f8fa}</style></head><body>";

/** An HTML output (a DataFrame table…) in an iframe with an empty sandbox: no scripts, no
 *  same origin, no forms, no navigation of the page. */
export function sandboxedHtml(html) {
  const box = el("div", "html-output");
  const frame = el("iframe");
  frame.setAttribute("sandbox", "");
  frame.setAttribute("referrerpolicy", "no-referrer");
  frame.title = "HTML output";
  frame.srcdoc = `${FRAME_HEAD}${html}</body></html>`;
  // The sandbox keeps us from measuring its content: guess from the number of rows.
  const rows = (html.match(/<tr[\s>]/gi) || []).length;
  const lines = (html.match(/<br|<p[\s>]|<li[\s>]|<h\d/gi) || []).length;
  const height = Math.min(480, Math.max(60, 24 + 26 * rows + 22 * lines));
  box.style.height = `${height}px`;
  box.append(frame);
  return box;
}

/** The error and notes of a finished execution (Execution.to_dict()). */
export function appendExecutionNotes(container, execution) {
  if (!execution) return;
  const error = execution.error;
  if (error) {
    const lines = Array.isArray(error.traceback) ? error.traceback.map(stripAnsi) : [];
    let text = lines.join("\n").trimEnd();
    const last = `${error.ename}: ${error.evalue}`;
    if (!text.includes(String(error.ename))) text = text ? `${text}\n${last}` : last;
    const pre = el("pre", "output traceback", text);
    pre.setAttribute("aria-label", `Error: ${error.ename}`);
    container.append(pre);
  }
  if (execution.timed_out) {
    container.append(el("p", "note warning", "The cell hit its time limit and was interrupted."));
  }
  if (execution.lost) {
    container.append(
      el("p", "note warning", `The interpreter was lost (${execution.lost}); its variables are gone, the files are kept.`),
    );
  }
  if (execution.truncated_chars > 0) {
    container.append(el("p", "note", `${execution.truncated_chars} characters of output were cut.`));
  }
}
