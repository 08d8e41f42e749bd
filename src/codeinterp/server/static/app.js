// The codeinterp web page: conversations with a model whose code runs in a session, streamed
// over Server-Sent Events; the session's files; the service's model and executor.

import {
  ApiError,
  api,
  clearToken,
  download,
  filePath,
  setToken,
  setUnauthorizedHandler,
  streamEvents,
  takeToken,
} from "./api.js";
import { highlightPython, renderMarkdown } from "./markdown.js";
import { appendExecutionNotes, appendOutput } from "./outputs.js";

const $ = (id) => document.getElementById(id);
const CURRENT_KEY = "codeinterp.conversation";

const state = {
  conversations: [],
  current: null, // the selected conversation
  views: new Map(), // conversation id -> {root: Element, loaded: Promise}
  running: new Set(), // ids of conversations with a turn running (streamed or followed)
  followed: new Set(), // ids whose running turn another tab started: polled, not streamed
  started: false,
};

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

// ---------------------------------------------------------------------------------------
// Status and errors

let statusTimer = 0;
function setStatus(message, { error = false, sticky = false } = {}) {
  const status = $("status");
  status.textContent = message;
  status.classList.toggle("error", error);
  clearTimeout(statusTimer);
  if (message && !sticky && !error) statusTimer = setTimeout(() => setStatus(""), 6000);
}

function reportError(error, what) {
  if (error instanceof ApiError && error.status === 401) return; // the login form says it
  const detail = error instanceof ApiError ? error.detail : String(error && error.message ? error.message : error);
  setStatus(`${what}: ${detail}`, { error: true });
}

// ---------------------------------------------------------------------------------------
// Login

function showLogin(message) {
  $("app").hidden = true;
  $("login").hidden = false;
  $("info").textContent = "";
  const error = $("login-error");
  error.hidden = !message;
  error.textContent = message || "";
  $("token-input").value = "";
  $("token-input").focus();
}

setUnauthorizedHandler(() => {
  clearToken();
  showLogin("The service did not accept this token. Paste the one `codeinterp serve` printed.");
});

$("login-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const token = $("token-input").value.trim();
  if (!token) return;
  setToken(token);
  start();
});

// ---------------------------------------------------------------------------------------
// Service info

async function loadInfo() {
  const info = await api("/api/info");
  const box = $("info");
  box.replaceChildren();
  const item = (label, value) => {
    const span = el("span", "info-item");
    const strong = el("strong", "", String(value ?? "?"));
    strong.title = strong.textContent;
    span.append(el("span", "info-label", `${label} `), strong);
    return span;
  };
  box.append(item("model", info.model), item("executor", info.executor));
  if (info.version) box.append(el("span", "info-item muted", `v${info.version}`));
}

// ---------------------------------------------------------------------------------------
// Conversations

function conversationTitle(conversation) {
  return (conversation && conversation.title) || "Untitled conversation";
}

function formatDate(value) {
  if (value === undefined || value === null || value === "") return "";
  let date;
  if (typeof value === "number") date = new Date(value < 1e12 ? value * 1000 : value);
  else date = new Date(value);
  if (Number.isNaN(date.getTime())) return "";
  return date.toLocaleString(undefined, { dateStyle: "short", timeStyle: "short" });
}

async function loadConversations() {
  state.conversations = (await api("/api/conversations")) || [];
  renderConversationList();
}

function renderConversationList() {
  const list = $("conversation-list");
  list.replaceChildren();
  if (!state.conversations.length) {
    list.append(el("li", "empty", "No conversations yet."));
    return;
  }
  for (const conversation of state.conversations) {
    const item = el("li", "conversation");
    const select = el("button", "conversation-select");
    select.type = "button";
    select.dataset.id = conversation.id;
    select.append(el("span", "conversation-title", conversationTitle(conversation)));
    const when = formatDate(conversation.created_at);
    if (when) select.append(el("span", "conversation-date", when));
    if (state.running.has(conversation.id) || conversation.running) {
      select.append(el("span", "badge", "running"));
    }
    if (state.current && state.current.id === conversation.id) {
      select.setAttribute("aria-current", "true");
      item.classList.add("selected");
    }
    select.addEventListener("click", () => selectConversation(conversation.id));
    const remove = el("button", "conversation-delete", "×");
    remove.type = "button";
    remove.setAttribute("aria-label", `Delete ${conversationTitle(conversation)}`);
    remove.title = "Delete";
    remove.addEventListener("click", () => deleteConversation(conversation.id));
    item.append(select, remove);
    list.append(item);
  }
}

async function newConversation() {
  const conversation = await api("/api/conversations", { method: "POST", json: {} });
  state.conversations = [conversation, ...state.conversations.filter((c) => c.id !== conversation.id)];
  await selectConversation(conversation.id, conversation);
  return conversation;
}

async function selectConversation(id, known) {
  const conversation = known || state.conversations.find((c) => c.id === id);
  if (!conversation) return;
  state.current = conversation;
  sessionStorage.setItem(CURRENT_KEY, id);
  $("chat-title").textContent = conversationTitle(conversation);
  renderConversationList();
  updateControls();
  let view = state.views.get(id);
  if (!view) {
    view = { root: el("div", "conversation-view"), loaded: null };
    view.loaded = loadHistory(id, view.root);
    state.views.set(id, view);
  }
  $("messages").replaceChildren(view.root);
  refreshFiles();
  let loaded = null;
  try {
    loaded = await view.loaded;
  } catch (error) {
    state.views.delete(id);
    reportError(error, "Could not load the conversation");
  }
  scrollToEnd(true);
  if (loaded && loaded.running && !state.running.has(id)) followTurn(id, view);
}

/** A turn started elsewhere (another tab, before a reload): poll its events until it ends. */
async function followTurn(id, view) {
  state.running.add(id);
  state.followed.add(id);
  updateControls();
  renderConversationList();
  setStatus("A turn started elsewhere is running; following it…", { sticky: true });
  try {
    for (;;) {
      await new Promise((resolve) => setTimeout(resolve, 1500));
      if (state.views.get(id) !== view) break; // deleted meanwhile
      const conversation = await loadHistory(id, view.root);
      scrollToEnd();
      if (!conversation.running) break;
    }
  } catch (error) {
    reportError(error, "Lost track of the running turn");
  } finally {
    state.running.delete(id);
    state.followed.delete(id);
    updateControls();
    renderConversationList();
    setStatus("");
    if (state.current && state.current.id === id) refreshFiles();
  }
}

async function deleteConversation(id) {
  const conversation = state.conversations.find((c) => c.id === id);
  if (!window.confirm(`Delete “${conversationTitle(conversation)}” and its history?`)) return;
  try {
    await api(`/api/conversations/${encodeURIComponent(id)}`, { method: "DELETE" });
  } catch (error) {
    reportError(error, "Could not delete the conversation");
    return;
  }
  state.conversations = state.conversations.filter((c) => c.id !== id);
  state.views.delete(id);
  state.running.delete(id);
  if (state.current && state.current.id === id) {
    state.current = null;
    sessionStorage.removeItem(CURRENT_KEY);
    if (state.conversations.length) {
      await selectConversation(state.conversations[0].id);
    } else {
      showNoConversation();
    }
  }
  renderConversationList();
  setStatus("Conversation deleted.");
}

function showNoConversation() {
  $("chat-title").textContent = "No conversation";
  $("messages").replaceChildren(el("p", "empty", "Create a conversation to start."));
  $("file-list").replaceChildren();
  updateControls();
}

function updateControls() {
  const current = state.current;
  const running = Boolean(current && state.running.has(current.id));
  $("prompt").disabled = false;
  $("send").disabled = running;
  $("interrupt").disabled = !running;
  $("reset").disabled = !current || running;
  $("export").disabled = !current;
  $("refresh-files").disabled = !current;
  $("upload").disabled = false;
  $("upload-label").removeAttribute("aria-disabled");
}

// ---------------------------------------------------------------------------------------
// Messages

function scrollToEnd(force = false) {
  const box = $("messages");
  const nearEnd = box.scrollHeight - box.scrollTop - box.clientHeight < 160;
  if (force || nearEnd) box.scrollTop = box.scrollHeight;
}

function addUserMessage(root, text) {
  const message = el("article", "msg user");
  message.setAttribute("aria-label", "You");
  message.append(el("div", "role", "You"));
  const body = el("div", "body");
  for (const paragraph of String(text).split(/\n{2,}/)) body.append(el("p", "", paragraph));
  message.append(body);
  root.append(message);
  return message;
}

function addNote(root, text, kind = "") {
  const note = el("p", `note ${kind}`.trim(), text);
  root.append(note);
  return note;
}

// The opening and closing fences the loop's CodeWatcher looks for (agent/protocols.py).
const FENCE_OPEN = /^[ \t]*```[ \t]*(python|py|python3|ipython)?[ \t]*$/i;
const FENCE_CLOSE = /^[ \t]*```[ \t]*$/m;

/** A round's streamed text as {prose, code}: code is null until an opening fence arrived. */
function splitRound(text) {
  let start = 0;
  for (;;) {
    const end = text.indexOf("\n", start);
    if (end < 0) break;
    if (FENCE_OPEN.test(text.slice(start, end))) {
      let code = text.slice(end + 1);
      const close = code.search(FENCE_CLOSE);
      if (close >= 0) code = code.slice(0, close);
      return { prose: text.slice(0, start), code: code.replace(/\n$/, "") };
    }
    start = end + 1;
  }
  // A fence still being written is not prose.
  const tail = text.slice(start);
  const prose = /^[ \t]*`{1,3}[A-Za-z0-9]*$/.test(tail) ? text.slice(0, start) : text;
  return { prose, code: null };
}

/** One assistant turn: rounds of prose, code and outputs, built as events arrive. */
class TurnView {
  constructor(root) {
    this.el = el("article", "msg assistant");
    this.el.setAttribute("aria-label", "Assistant");
    this.el.append(el("div", "role", "Assistant"));
    this.body = el("div", "body");
    this.el.append(this.body);
    root.append(this.el);
    this.rounds = new Map();
    this.current = null;
    this.frame = 0;
    this.dirty = new Set();
  }

  setBusy(busy) {
    this.el.setAttribute("aria-busy", busy ? "true" : "false");
    this.el.classList.toggle("busy", busy);
  }

  round(n) {
    const key = Number.isFinite(n) ? n : this.current ? this.current.n : 1;
    let round = this.rounds.get(key);
    if (!round) {
      const node = el("div", "round");
      const prose = el("div", "md prose");
      node.append(prose);
      this.body.append(node);
      round = { n: key, node, prose, text: "", code: null, cell: null };
      this.rounds.set(key, round);
    }
    this.current = round;
    return round;
  }

  cell(round) {
    if (!round.cell) {
      const section = el("section", "cell");
      section.setAttribute("aria-label", "Code cell");
      const head = el("div", "cell-head");
      const label = el("span", "cell-label", "In [ ]");
      const stateLabel = el("span", "cell-state", "writing…");
      head.append(label, stateLabel);
      const pre = el("pre", "code");
      const code = el("code", "language-python");
      pre.append(code);
      pre.tabIndex = 0;
      const outputs = el("div", "outputs");
      outputs.setAttribute("aria-live", "polite");
      section.append(head, pre, outputs);
      round.node.append(section);
      round.cell = { section, label, state: stateLabel, code, outputs, shown: 0 };
    }
    return round.cell;
  }

  // Re-render dirty rounds at most once per frame while text streams in.
  schedule(round) {
    this.dirty.add(round);
    if (!this.frame) {
      this.frame = requestAnimationFrame(() => this.flush());
    }
  }

  flush() {
    cancelAnimationFrame(this.frame);
    this.frame = 0;
    for (const round of this.dirty) this.render(round);
    this.dirty.clear();
    scrollToEnd();
  }

  render(round) {
    const { prose, code } = splitRound(round.text);
    round.prose.innerHTML = renderMarkdown(prose); // escaped by renderMarkdown
    round.prose.hidden = !prose.trim();
    const shown = round.code !== null ? round.code : code;
    if (shown !== null) {
      this.cell(round).code.innerHTML = highlightPython(shown); // escaped by highlightPython
    }
  }

  handle(type, data) {
    const kind = (data && data.type) || type;
    switch (kind) {
      case "text": {
        const round = this.round(data.round);
        round.text += String(data.text ?? "");
        this.schedule(round);
        break;
      }
      case "code": {
        const round = this.round(data.round);
        round.code = String(data.code ?? "");
        this.flush();
        this.render(round);
        const cell = this.cell(round);
        cell.state.textContent = "running…";
        cell.section.classList.add("running");
        break;
      }
      case "output": {
        const round = this.round(data.round);
        this.flush();
        const cell = this.cell(round);
        appendOutput(cell.outputs, data.output);
        cell.shown += 1;
        scrollToEnd();
        break;
      }
      case "execution": {
        const round = this.round(data.round);
        this.flush();
        const cell = this.cell(round);
        const execution = data.execution || {};
        const outputs = Array.isArray(execution.outputs) ? execution.outputs : [];
        for (const output of outputs.slice(cell.shown)) appendOutput(cell.outputs, output);
        cell.shown = Math.max(cell.shown, outputs.length);
        appendExecutionNotes(cell.outputs, execution);
        if (execution.execution_count != null) cell.label.textContent = `In [${execution.execution_count}]`;
        cell.section.classList.remove("running");
        const failed = Boolean(execution.error || execution.timed_out || execution.lost);
        cell.section.classList.toggle("failed", failed);
        const seconds = Number(execution.duration_s || 0);
        cell.state.textContent = failed
          ? execution.error
            ? `raised ${execution.error.ename}`
            : execution.timed_out
              ? "timed out"
              : "interpreter lost"
          : `ran in ${seconds < 1 ? `${Math.round(seconds * 1000)} ms` : `${seconds.toFixed(1)} s`}`;
        scrollToEnd();
        break;
      }
      case "round":
        this.flush();
        break;
      case "finished":
        this.flush();
        this.finish(data);
        break;
      case "session_lost":
        this.flush();
        addNote(this.body, data.detail || "The session was lost; files in the workspace are kept.", "warning");
        break;
      case "error":
        this.flush();
        addNote(this.body, `Error: ${data.detail || "the turn failed"}`, "error");
        break;
      default:
        break; // "done" and events this page does not know
    }
  }

  finish(data) {
    const reason = data.stop_reason;
    if (reason === "interrupted") addNote(this.body, "Interrupted.", "warning");
    else if (reason === "max_rounds") {
      addNote(this.body, `Stopped after ${data.rounds} rounds without a final answer; send a message to go on.`, "warning");
    } else if (reason === "model_error") addNote(this.body, `The model failed: ${data.answer}`, "error");
    for (const round of this.rounds.values()) {
      if (round.cell && round.cell.section.classList.contains("running")) {
        round.cell.section.classList.remove("running");
        round.cell.state.textContent = reason === "interrupted" ? "interrupted" : "stopped";
      } else if (round.cell && round.code === null && round.cell.shown === 0) {
        round.cell.state.textContent = "not run";
      }
    }
  }

  end() {
    this.flush();
    this.setBusy(false);
  }
}

async function loadHistory(id, root) {
  const conversation = await api(`/api/conversations/${encodeURIComponent(id)}`);
  root.replaceChildren();
  const events = Array.isArray(conversation.events) ? conversation.events : [];
  let turn;
  let view = null;
  for (const event of events) {
    if (event.type === "user" || (event.type === "message" && event.role === "user")) {
      if (view) view.end();
      view = null;
      addUserMessage(root, event.text ?? event.content ?? "");
      turn = event.turn;
      continue;
    }
    if (event.type === "reset") {
      if (view) view.end();
      view = null;
      addNote(root, "Session reset: the model forgot the conversation; files were kept.");
      continue;
    }
    if (event.type === "session_lost") {
      if (view) view.end();
      view = null;
      addNote(root, event.detail || "The session was lost; files in the workspace are kept.", "warning");
      continue;
    }
    if (!view || event.turn !== turn) {
      if (view) view.end();
      view = new TurnView(root);
      turn = event.turn;
    }
    view.handle(event.type, event);
  }
  if (view) {
    view.end();
    if (conversation.running) view.setBusy(true); // a turn still running (started elsewhere)
  }
  if (!root.childElementCount) root.append(el("p", "empty", "No messages yet: ask for something below."));
  return conversation;
}

async function sendMessage(text) {
  let conversation = state.current;
  if (!conversation) conversation = await newConversation();
  const id = conversation.id;
  if (state.running.has(id)) return;
  let view = state.views.get(id);
  if (!view) {
    await selectConversation(id);
    view = state.views.get(id);
    if (!view) throw new Error("the conversation could not be loaded");
  }
  await view.loaded.catch(() => {});
  const root = view.root;
  root.querySelector(":scope > .empty")?.remove();
  addUserMessage(root, text);
  const turn = new TurnView(root);
  turn.setBusy(true);
  scrollToEnd(true);
  state.running.add(id);
  updateControls();
  renderConversationList();
  setStatus("Working…", { sticky: true });
  let failed = false;
  try {
    await streamEvents(`/api/conversations/${encodeURIComponent(id)}/messages`, { text }, (type, data) => {
      turn.handle(type, data);
      if (type === "error") failed = true;
      if (type === "execution" && state.current && state.current.id === id) refreshFiles();
    });
  } catch (error) {
    failed = true;
    turn.flush();
    const detail = error instanceof ApiError ? error.detail : String(error.message || error);
    addNote(turn.body, `Error: ${detail}`, "error");
  } finally {
    turn.end();
    state.running.delete(id);
    updateControls();
    if (!failed) setStatus("");
    else setStatus("The turn ended with an error.", { error: true });
  }
  if (state.current && state.current.id === id) refreshFiles();
  loadConversations()
    .then(() => {
      const fresh = state.conversations.find((c) => c.id === id);
      if (fresh && state.current && state.current.id === id) {
        state.current = fresh;
        $("chat-title").textContent = conversationTitle(fresh);
      }
    })
    .catch(() => {});
}

async function interrupt() {
  const conversation = state.current;
  if (!conversation || !state.running.has(conversation.id)) return;
  try {
    await api(`/api/conversations/${encodeURIComponent(conversation.id)}/interrupt`, { method: "POST" });
    setStatus("Interrupting…");
  } catch (error) {
    reportError(error, "Could not interrupt");
  }
}

async function reset() {
  const conversation = state.current;
  if (!conversation) return;
  if (!window.confirm("Reset: the model forgets this conversation and the Python session restarts. Files are kept.")) {
    return;
  }
  try {
    const fresh = await api(`/api/conversations/${encodeURIComponent(conversation.id)}/reset`, { method: "POST" });
    if (fresh && fresh.id) Object.assign(conversation, fresh);
    const view = state.views.get(conversation.id);
    if (view) addNote(view.root, "Session reset: the model forgot the conversation; files were kept.");
    scrollToEnd(true);
    setStatus("Reset done.");
    refreshFiles();
  } catch (error) {
    reportError(error, "Could not reset");
  }
}

// ---------------------------------------------------------------------------------------
// Files

function formatSize(bytes) {
  const n = Number(bytes);
  if (!Number.isFinite(n)) return "";
  if (n < 1024) return `${n} B`;
  const units = ["kB", "MB", "GB"];
  let value = n / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

let filesRequest = 0;
async function refreshFiles() {
  const conversation = state.current;
  if (!conversation || !conversation.session_id) return;
  const ticket = ++filesRequest;
  let files;
  try {
    files = await api(`/api/sessions/${encodeURIComponent(conversation.session_id)}/files`);
  } catch (error) {
    if (ticket === filesRequest) reportError(error, "Could not list the files");
    return;
  }
  if (ticket !== filesRequest || !state.current || state.current.id !== conversation.id) return;
  const list = $("file-list");
  list.replaceChildren();
  files = (files || []).slice().sort((a, b) => String(a.path).localeCompare(String(b.path)));
  if (!files.length) {
    list.append(el("li", "empty", "No files yet. Upload data, or let the code write some."));
    return;
  }
  for (const file of files) {
    const item = el("li", "file");
    const link = el("a", "file-link", file.path);
    const url = filePath(conversation.session_id, file.path);
    const name = String(file.path).split("/").pop();
    link.href = url;
    link.download = name;
    link.title = `Download ${file.path}`;
    link.addEventListener("click", async (event) => {
      event.preventDefault();
      try {
        await download(url, name);
      } catch (error) {
        reportError(error, `Could not download ${file.path}`);
      }
    });
    item.append(link, el("span", "file-size", formatSize(file.size)));
    list.append(item);
  }
}

async function upload(fileList) {
  const files = Array.from(fileList || []);
  if (!files.length) return;
  let conversation = state.current;
  try {
    if (!conversation) conversation = await newConversation();
    const form = new FormData();
    for (const file of files) form.append("file", file, file.name);
    setStatus(`Uploading ${files.length === 1 ? files[0].name : `${files.length} files`}…`, { sticky: true });
    const saved = await api(`/api/sessions/${encodeURIComponent(conversation.session_id)}/files`, {
      method: "POST",
      body: form,
    });
    const names = (saved || []).map((f) => f.path).join(", ") || files.map((f) => f.name).join(", ");
    setStatus(`Uploaded ${names}.`);
  } catch (error) {
    reportError(error, "Upload failed");
  }
  refreshFiles();
}

// ---------------------------------------------------------------------------------------
// Wiring

$("new-conversation").addEventListener("click", async () => {
  try {
    await newConversation();
    $("prompt").focus();
  } catch (error) {
    reportError(error, "Could not create a conversation");
  }
});

$("composer").addEventListener("submit", async (event) => {
  event.preventDefault();
  const prompt = $("prompt");
  const text = prompt.value.trim();
  if (!text || (state.current && state.running.has(state.current.id))) return;
  prompt.value = "";
  try {
    await sendMessage(text);
  } catch (error) {
    prompt.value = text;
    reportError(error, "Could not send");
  }
});

$("prompt").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    $("composer").requestSubmit();
  }
});

document.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && state.current && state.running.has(state.current.id)) {
    event.preventDefault();
    interrupt();
  }
});

$("interrupt").addEventListener("click", interrupt);
$("reset").addEventListener("click", reset);
$("refresh-files").addEventListener("click", refreshFiles);
$("export").addEventListener("click", async () => {
  const conversation = state.current;
  if (!conversation) return;
  const name = `${conversationTitle(conversation).replace(/[^\w.-]+/g, "_").slice(0, 60) || "conversation"}.ipynb`;
  try {
    await download(`/api/conversations/${encodeURIComponent(conversation.id)}/notebook`, name);
  } catch (error) {
    reportError(error, "Could not export");
  }
});

$("upload").addEventListener("change", async (event) => {
  const input = event.target;
  await upload(input.files);
  input.value = "";
});

// Files dropped anywhere on the chat are uploaded too.
const chat = document.querySelector(".chat");
chat.addEventListener("dragover", (event) => {
  if (event.dataTransfer && Array.from(event.dataTransfer.types).includes("Files")) {
    event.preventDefault();
    chat.classList.add("dropping");
  }
});
chat.addEventListener("dragleave", () => chat.classList.remove("dropping"));
chat.addEventListener("drop", (event) => {
  chat.classList.remove("dropping");
  if (event.dataTransfer && event.dataTransfer.files.length) {
    event.preventDefault();
    upload(event.dataTransfer.files);
  }
});

async function start() {
  $("login").hidden = true;
  $("app").hidden = false;
  try {
    await loadInfo();
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) return;
    $("info").textContent = "service unavailable";
    reportError(error, "Could not reach the service");
  }
  try {
    await loadConversations();
  } catch (error) {
    reportError(error, "Could not list the conversations");
    return;
  }
  updateControls();
  const saved = sessionStorage.getItem(CURRENT_KEY);
  const first = state.conversations.find((c) => c.id === saved) || state.conversations[0];
  if (first) await selectConversation(first.id);
  else showNoConversation();
  $("prompt").focus();
  state.started = true;
  document.body.dataset.ready = "true";
}

if (takeToken()) start();
else showLogin("");
