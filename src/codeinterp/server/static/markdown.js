// Safe text rendering: HTML escaping, a small Python highlighter and a markdown subset.
// Every function here returns HTML built only from escaped text and fixed tags, so its result
// may be assigned to innerHTML; nothing from the model or the code reaches the page unescaped.

const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };

export function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => ESCAPES[c]);
}

// Terminal colour codes (IPython tracebacks carry them) and other control sequences.
const ANSI = /\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]/g;

export function stripAnsi(text) {
  return String(text).replace(ANSI, "");
}

/** Apply carriage returns the way a terminal would (progress bars redraw their line). */
export function applyCarriageReturns(text) {
  if (!text.includes("\r")) return text;
  return text
    .replace(/\r\n/g, "\n")
    .split("\n")
    .map((line) => {
      const parts = line.split("\r");
      let shown = "";
      for (const part of parts) shown = part + shown.slice(part.length);
      return shown;
    })
    .join("\n");
}

// ---------------------------------------------------------------------------------------
// Python highlighting

const KEYWORDS = new Set(
  (
    "False None True and as assert async await break class continue def del elif else " +
    "except finally for from global if import in is lambda nonlocal not or pass raise " +
    "return try while with yield match case"
  ).split(" "),
);

const BUILTINS = new Set(
  (
    "abs all any bin bool bytearray bytes callable chr dict dir divmod enumerate eval exec " +
    "filter float format frozenset getattr globals hasattr hash help hex id input int " +
    "isinstance issubclass iter len list locals map max min next object oct open ord pow " +
    "print property range repr reversed round set setattr slice sorted staticmethod str sum " +
    "super tuple type vars zip self cls Exception ValueError TypeError KeyError IndexError"
  ).split(" "),
);

const PYTHON_TOKEN = new RegExp(
  [
    /(#[^\n]*)/.source, // 1 comment
    // 2 string: optional prefix; triple-quoted or single-line; unterminated ones run to the
    // end of the text (or the line), as they do while code is still streaming in.
    /((?:[rRbBuUfF]{1,2})?(?:"""[\s\S]*?(?:"""|$)|'''[\s\S]*?(?:'''|$)|"(?:[^"\\\n]|\\[\s\S])*(?:"|(?=\n)|$)|'(?:[^'\\\n]|\\[\s\S])*(?:'|(?=\n)|$)))/
      .source,
    // 3 number
    /(\b0[xX][0-9a-fA-F_]+\b|\b0[oO][0-7_]+\b|\b0[bB][01_]+\b|\b\d[\d_]*(?:\.[\d_]*)?(?:[eE][+-]?\d+)?[jJ]?|\.\d[\d_]*(?:[eE][+-]?\d+)?[jJ]?)/
      .source,
    /(@[A-Za-z_][\w.]*)/.source, // 4 decorator
    /([A-Za-z_][A-Za-z0-9_]*)/.source, // 5 name
  ].join("|"),
  "g",
);

function span(kind, text) {
  return `<span class="tok-${kind}">${escapeHtml(text)}</span>`;
}

/** Python source as HTML: keywords, builtins, strings, comments, numbers, definitions. */
export function highlightPython(code) {
  let html = "";
  let last = 0;
  let previousName = "";
  PYTHON_TOKEN.lastIndex = 0;
  let m;
  while ((m = PYTHON_TOKEN.exec(code)) !== null) {
    if (m[0] === "") {
      PYTHON_TOKEN.lastIndex += 1; // never loop on an empty match
      continue;
    }
    html += escapeHtml(code.slice(last, m.index));
    last = m.index + m[0].length;
    if (m[1] !== undefined) html += span("com", m[1]);
    else if (m[2] !== undefined) html += span("str", m[2]);
    else if (m[3] !== undefined) html += span("num", m[3]);
    else if (m[4] !== undefined) html += span("deco", m[4]);
    else {
      const name = m[5];
      if (previousName === "def" || previousName === "class") html += span("def", name);
      else if (KEYWORDS.has(name)) html += span("kw", name);
      else if (BUILTINS.has(name)) html += span("builtin", name);
      else html += escapeHtml(name);
      previousName = name;
      continue;
    }
    previousName = "";
  }
  return html + escapeHtml(code.slice(last));
}

const PYTHON_LANGUAGES = new Set(["", "python", "py", "python3", "ipython", "pycon"]);

export function isPython(language) {
  return PYTHON_LANGUAGES.has(String(language || "").toLowerCase());
}

/** A code block's inner HTML: highlighted if it is Python, else escaped text. */
export function codeHtml(code, language = "python") {
  return isPython(language) ? highlightPython(code) : escapeHtml(code);
}

// ---------------------------------------------------------------------------------------
// Markdown subset: paragraphs, headings, lists, block quotes, fenced code, inline code,
// bold and italics. Links and raw HTML stay text.

/** Inline markdown of one block's raw text, escaped first. */
export function renderInline(raw) {
  let html = "";
  let rest = String(raw);
  // Code spans first: their content is literal.
  const codeSpan = /(`+)([\s\S]*?[^`])\1(?!`)/;
  let m;
  while ((m = codeSpan.exec(rest)) !== null) {
    html += emphasis(escapeHtml(rest.slice(0, m.index)));
    html += `<code>${escapeHtml(m[2].trim() || m[2])}</code>`;
    rest = rest.slice(m.index + m[0].length);
  }
  return html + emphasis(escapeHtml(rest));
}

// Runs on escaped text: it only wraps existing text in fixed tags. No `__bold__`: prose about
// Python names (__init__) would turn bold.
function emphasis(escaped) {
  return escaped
    .replace(/\*\*(?=\S)([\s\S]*?\S)\*\*/g, "<strong>$1</strong>")
    .replace(/(^|[^*\w])\*(?=[^\s*])([^*]*?[^\s*])\*(?!\*)/g, "$1<em>$2</em>")
    .replace(/(^|[^\w])_(?=[^\s_])([^_]*?[^\s_])_(?!\w)/g, "$1<em>$2</em>");
}

const FENCE = /^\s*(`{3,}|~{3,})\s*([\w+.-]*)\s*$/;
const HEADING = /^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$/;
const BULLET = /^(\s*)[-*+]\s+(.*)$/;
const ORDERED = /^(\s*)(\d{1,9})[.)]\s+(.*)$/;
const QUOTE = /^\s{0,3}>\s?(.*)$/;
const RULE = /^\s{0,3}([-*_])(\s*\1){2,}\s*$/;

/** Markdown as HTML (escaped). A fence left open (still streaming) runs to the end. */
export function renderMarkdown(source) {
  const lines = String(source).replace(/\r\n?/g, "\n").split("\n");
  const out = [];
  let paragraph = [];
  let list = null; // {tag, items: [raw]}
  let quote = [];

  const flushParagraph = () => {
    if (paragraph.length) out.push(`<p>${paragraph.map(renderInline).join("<br>")}</p>`);
    paragraph = [];
  };
  const flushList = () => {
    if (list) {
      const start = list.tag === "ol" && list.start !== 1 ? ` start="${list.start}"` : "";
      const items = list.items.map((item) => `<li>${renderInline(item)}</li>`).join("");
      out.push(`<${list.tag}${start}>${items}</${list.tag}>`);
    }
    list = null;
  };
  const flushQuote = () => {
    if (quote.length) out.push(`<blockquote>${renderMarkdown(quote.join("\n"))}</blockquote>`);
    quote = [];
  };
  const flushAll = () => {
    flushParagraph();
    flushList();
    flushQuote();
  };

  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    let m;
    if ((m = FENCE.exec(line)) !== null) {
      flushAll();
      const marker = m[1];
      const language = m[2];
      const body = [];
      i++;
      while (i < lines.length && !new RegExp(`^\\s*${marker[0]}{${marker.length},}\\s*$`).test(lines[i])) {
        body.push(lines[i]);
        i++;
      }
      const cls = isPython(language) ? "language-python" : "language-text";
      out.push(`<pre class="code"><code class="${cls}">${codeHtml(body.join("\n"), language)}</code></pre>`);
      continue;
    }
    if (!line.trim()) {
      flushAll();
      continue;
    }
    if ((m = QUOTE.exec(line)) !== null) {
      flushParagraph();
      flushList();
      quote.push(m[1]);
      continue;
    }
    flushQuote();
    if ((m = HEADING.exec(line)) !== null) {
      flushAll();
      const level = Math.min(6, m[1].length + 2); // the page has h1/h2; prose headings start at h3
      out.push(`<h${level}>${renderInline(m[2])}</h${level}>`);
      continue;
    }
    if (RULE.test(line)) {
      flushAll();
      out.push("<hr>");
      continue;
    }
    const bullet = BULLET.exec(line);
    const ordered = bullet ? null : ORDERED.exec(line);
    if (bullet || ordered) {
      flushParagraph();
      const tag = bullet ? "ul" : "ol";
      if (!list || list.tag !== tag) {
        flushList();
        list = { tag, items: [], start: ordered ? Number(ordered[2]) : 1 };
      }
      list.items.push(bullet ? bullet[2] : ordered[3]);
      continue;
    }
    if (list && /^\s+\S/.test(line)) {
      // a continuation line of the last item
      list.items[list.items.length - 1] += ` ${line.trim()}`;
      continue;
    }
    flushList();
    paragraph.push(line.trim());
  }
  flushAll();
  return out.join("");
}
