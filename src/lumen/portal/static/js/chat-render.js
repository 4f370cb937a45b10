// Renders model output (Markdown with code, tables and LaTeX) into the chat page, safely.
//
// Model output is untrusted: markdown-it runs with raw HTML disabled, images become plain links
// (a picture could leak the conversation to its server), links keep only http(s) and mailto, and
// the result always passes through DOMPurify before it touches the page. KaTeX's layout uses
// inline styles, which the Content-Security-Policy forbids in markup: they travel as
// data-katex-style and are applied through the CSSOM (which the policy allows) inside .katex only.
(function () {
  "use strict";

  var SAFE_LINK = /^(?:(?:https?|mailto):|[^a-z]|[a-z+.\-]+(?:[^a-z+.\-:]|$))/i;
  var KATEX_PROPERTIES = /^(?:height|width|min-width|max-width|vertical-align|top|bottom|left|right|margin(?:-(?:left|right|top|bottom))?|padding(?:-(?:left|right|top|bottom))?|border(?:-(?:top|bottom|left|right))?-(?:width|style|color)|border-width|border-style|border-color|color|background-color|position)$/;

  function escapeHtml(text) {
    return text.replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
    });
  }

  // --- math: $…$, $$…$$, \(…\) and \[…\], outside code -----------------------------------------

  function renderTex(tex, display) {
    var html;
    try {
      html = window.katex.renderToString(tex, {
        displayMode: display,
        throwOnError: false,
        output: "htmlAndMathml",
        trust: false,
        strict: "ignore",
        maxExpand: 1000,
        maxSize: 50,
      });
    } catch (e) {
      return '<code class="math-error">' + escapeHtml(tex) + "</code>";
    }
    // KaTeX writes every attribute in double quotes with its value escaped.
    html = html.replace(/ style="([^"]*)"/g, ' data-katex-style="$1"');
    return display ? '<div class="math-display">' + html + "</div>" : html;
  }

  function closingDollar(src, from, max) {
    // A closing $ has no space before it and no digit after it ("costs $5 and $10" is no math).
    for (var i = from; i < max; i++) {
      var c = src.charAt(i);
      if (c === "\\") {
        i++;
        continue;
      }
      if (c === "$") {
        if (/\s/.test(src.charAt(i - 1)) || /\d/.test(src.charAt(i + 1) || "")) {
          return -1;
        }
        return i;
      }
    }
    return -1;
  }

  function mathInline(state, silent) {
    var src = state.src;
    var pos = state.pos;
    var max = state.posMax;
    var open;
    var close;
    var display = false;
    if (src.startsWith("\\(", pos)) {
      open = "\\(";
      close = "\\)";
    } else if (src.startsWith("\\[", pos)) {
      open = "\\[";
      close = "\\]";
      display = true;
    } else if (src.startsWith("$$", pos)) {
      open = close = "$$";
      display = true;
    } else if (src.charAt(pos) === "$") {
      open = close = "$";
    } else {
      return false;
    }
    var start = pos + open.length;
    var end;
    if (open === "$") {
      if (start >= max || /\s/.test(src.charAt(start))) {
        return false;
      }
      end = closingDollar(src, start, max);
    } else {
      end = src.indexOf(close, start);
      if (end + close.length > max) {
        end = -1;
      }
    }
    if (end < 0 || !src.slice(start, end).trim()) {
      return false;
    }
    if (!silent) {
      var token = state.push(display ? "math_inline_display" : "math_inline", "math", 0);
      token.content = src.slice(start, end);
      token.markup = open;
    }
    state.pos = end + close.length;
    return true;
  }

  function mathBlock(state, startLine, endLine, silent) {
    var pos = state.bMarks[startLine] + state.tShift[startLine];
    var max = state.eMarks[startLine];
    if (state.sCount[startLine] - state.blkIndent >= 4) {
      return false; // an indented code block
    }
    var line = state.src.slice(pos, max);
    var close;
    var open;
    if (line.startsWith("$$")) {
      open = close = "$$";
    } else if (line.startsWith("\\[")) {
      open = "\\[";
      close = "\\]";
    } else {
      return false;
    }
    var lines = [];
    var rest = line.slice(open.length);
    var next = startLine;
    var found = false;
    for (;;) {
      var at = rest.indexOf(close);
      if (at >= 0) {
        if (rest.slice(at + close.length).trim()) {
          return false; // text after the closing delimiter: leave it to the inline rule
        }
        lines.push(rest.slice(0, at));
        found = true;
        break;
      }
      lines.push(rest);
      next++;
      if (next >= endLine) {
        break;
      }
      rest = state.src.slice(state.bMarks[next] + state.tShift[next], state.eMarks[next]);
    }
    if (!found || !lines.join("").trim()) {
      return false;
    }
    if (silent) {
      return true;
    }
    state.line = next + 1;
    var token = state.push("math_block", "math", 0);
    token.block = true;
    token.content = lines.join("\n");
    token.markup = open;
    token.map = [startLine, state.line];
    return true;
  }

  // --- markdown-it ------------------------------------------------------------------------------

  var md = null;

  function markdown() {
    if (md) {
      return md;
    }
    md = window.markdownit({
      html: false,
      linkify: true,
      typographer: false,
      highlight: function (code, language) {
        var hljs = window.hljs;
        if (hljs && language && hljs.getLanguage(language)) {
          try {
            return hljs.highlight(code, { language: language, ignoreIllegals: true }).value;
          } catch (e) {
            return "";
          }
        }
        return ""; // markdown-it escapes the code itself
      },
    });
    md.validateLink = function (url) {
      return SAFE_LINK.test(url.trim());
    };
    md.block.ruler.before("fence", "math_block", mathBlock, { alt: ["paragraph", "reference", "blockquote", "list"] });
    md.inline.ruler.before("escape", "math_inline", mathInline);
    md.renderer.rules.math_inline = function (tokens, idx) {
      return renderTex(tokens[idx].content, false);
    };
    md.renderer.rules.math_inline_display = function (tokens, idx) {
      return renderTex(tokens[idx].content, true);
    };
    md.renderer.rules.math_block = function (tokens, idx) {
      return renderTex(tokens[idx].content, true) + "\n";
    };
    md.renderer.rules.image = function (tokens, idx) {
      var token = tokens[idx];
      var src = token.attrGet("src") || "";
      var label = "Image: " + (token.content || src);
      if (!SAFE_LINK.test(src)) {
        return escapeHtml(label);
      }
      return '<a href="' + escapeHtml(src) + '">' + escapeHtml(label) + "</a>";
    };
    return md;
  }

  // --- sanitising -------------------------------------------------------------------------------

  var purifier = null;

  function purify() {
    if (purifier) {
      return purifier;
    }
    purifier = window.DOMPurify;
    purifier.addHook("uponSanitizeAttribute", function (node, data) {
      // The only data attribute kept is KaTeX's carried style.
      if (data.attrName.indexOf("data-") === 0 && data.attrName !== "data-katex-style") {
        data.keepAttr = false;
      }
    });
    purifier.addHook("afterSanitizeAttributes", function (node) {
      if (node.nodeName === "A" && node.hasAttribute("href")) {
        node.setAttribute("target", "_blank");
        node.setAttribute("rel", "noopener noreferrer nofollow");
      }
      if (node.hasAttribute && node.hasAttribute("data-katex-style") && !node.closest(".katex")) {
        node.removeAttribute("data-katex-style");
      }
    });
    return purifier;
  }

  var PURIFY_CONFIG = {
    USE_PROFILES: { html: true, svg: true, mathMl: true },
    ALLOWED_URI_REGEXP: SAFE_LINK,
    FORBID_TAGS: ["style", "img", "form", "input", "button", "textarea", "select", "iframe", "object", "embed", "video", "audio", "source"],
    FORBID_ATTR: ["style", "srcset", "formaction", "xlink:href", "action"],
    // KaTeX's MathML keeps the TeX source for screen readers in <annotation> (text only; the risky
    // annotation-xml stays forbidden).
    ADD_TAGS: ["semantics", "annotation"],
    ADD_ATTR: ["target", "encoding"],
    ADD_DATA_URI_TAGS: [],
    RETURN_DOM_FRAGMENT: true,
  };

  function applyKatexStyles(root) {
    var styled = root.querySelectorAll(".katex [data-katex-style]");
    for (var i = 0; i < styled.length; i++) {
      var element = styled[i];
      var declarations = element.getAttribute("data-katex-style").split(";");
      for (var j = 0; j < declarations.length; j++) {
        var colon = declarations[j].indexOf(":");
        if (colon < 0) {
          continue;
        }
        var property = declarations[j].slice(0, colon).trim().toLowerCase();
        var value = declarations[j].slice(colon + 1).trim();
        if (KATEX_PROPERTIES.test(property) && !/url\(|expression|[<>]/i.test(value)) {
          element.style.setProperty(property, value);
        }
      }
      element.removeAttribute("data-katex-style");
    }
  }

  // --- code blocks: language label and copy button ----------------------------------------------

  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text);
    }
    return new Promise(function (resolve, reject) {
      var area = document.createElement("textarea");
      area.value = text;
      area.setAttribute("readonly", "");
      area.className = "copy-buffer";
      document.body.appendChild(area);
      area.select();
      var ok = document.execCommand("copy");
      document.body.removeChild(area);
      if (ok) {
        resolve();
      } else {
        reject(new Error("copy refused"));
      }
    });
  }

  function copyButton(label, getText) {
    var button = document.createElement("button");
    button.type = "button";
    button.className = "copy-button";
    button.textContent = label;
    button.addEventListener("click", function () {
      copyText(getText()).then(
        function () {
          button.textContent = "Copied";
          setTimeout(function () {
            button.textContent = label;
          }, 1500);
        },
        function () {
          button.textContent = "Copy failed";
        }
      );
    });
    return button;
  }

  function decorateCode(root) {
    var blocks = root.querySelectorAll("pre > code");
    for (var i = 0; i < blocks.length; i++) {
      var code = blocks[i];
      var pre = code.parentNode;
      var match = /(?:^|\s)language-([\w+#.-]+)/.exec(code.className);
      var wrapper = document.createElement("div");
      wrapper.className = "code-block";
      var bar = document.createElement("div");
      bar.className = "code-bar";
      var language = document.createElement("span");
      language.className = "code-language";
      language.textContent = match ? match[1] : "text";
      bar.appendChild(language);
      bar.appendChild(
        copyButton(
          "Copy code",
          (function (source) {
            return function () {
              return source.textContent;
            };
          })(code)
        )
      );
      pre.parentNode.insertBefore(wrapper, pre);
      wrapper.appendChild(bar);
      wrapper.appendChild(pre);
      if (!code.classList.contains("hljs")) {
        code.classList.add("hljs");
      }
    }
    var tables = root.querySelectorAll("table");
    for (var t = 0; t < tables.length; t++) {
      var scroller = document.createElement("div");
      scroller.className = "table-scroll";
      tables[t].parentNode.insertBefore(scroller, tables[t]);
      scroller.appendChild(tables[t]);
    }
  }

  // Replaces the content of `target` with `source` rendered as Markdown.
  function renderMarkdown(target, source) {
    var fragment = purify().sanitize(markdown().render(source || ""), PURIFY_CONFIG);
    target.replaceChildren(fragment);
    // After insertion: styles set through the CSSOM on elements of this document only.
    applyKatexStyles(target);
    decorateCode(target);
  }

  window.lumenChatRender = {
    renderMarkdown: renderMarkdown,
    copyButton: copyButton,
    copyText: copyText,
  };
})();
