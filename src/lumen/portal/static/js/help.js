// Copy buttons, for the code on Help and Connect and for a new API key: every code block gets a
// button that copies its text, and `button[data-copy="id"]` copies the text (or value) of that
// element. The result is announced in the page's `#copy-status` live region.
(function () {
  "use strict";

  var LANGUAGES = { sh: "shell", python: "Python", js: "JavaScript", yaml: "YAML", json: "JSON", http: "HTTP", powershell: "PowerShell", text: "" };

  function announce(message) {
    var status = document.getElementById("copy-status");
    if (!status) {
      return;
    }
    status.textContent = "";
    // A fresh text node after a pause, so the same message is announced again.
    window.setTimeout(function () {
      status.textContent = message;
    }, 50);
  }

  // Without the Clipboard API (an http:// page that is not localhost), copy through a selection.
  function copyBySelection(text) {
    var buffer = document.createElement("textarea");
    buffer.value = text;
    buffer.setAttribute("readonly", "");
    buffer.setAttribute("aria-hidden", "true");
    buffer.tabIndex = -1;
    buffer.className = "copy-buffer";
    document.body.appendChild(buffer);
    buffer.select();
    var copied = false;
    try {
      copied = document.execCommand("copy");
    } catch (e) {
      copied = false;
    }
    document.body.removeChild(buffer);
    return copied ? Promise.resolve() : Promise.reject(new Error("copy refused"));
  }

  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text).catch(function () {
        return copyBySelection(text);
      });
    }
    return copyBySelection(text);
  }

  function attach(button, textOf, what) {
    var label = button.textContent;
    button.addEventListener("click", function () {
      copyText(textOf()).then(
        function () {
          button.textContent = "Copied";
          announce(what + " is copied to the clipboard.");
          window.setTimeout(function () {
            button.textContent = label;
          }, 2000);
        },
        function () {
          announce("Copying did not work here: select the text and copy it yourself.");
        }
      );
    });
  }

  // The heading a code block belongs to, to tell its button apart from the others.
  function headingOf(block) {
    var node = block.previousElementSibling;
    while (node && !/^H[1-6]$/.test(node.tagName)) {
      node = node.previousElementSibling;
    }
    return node ? node.textContent.trim() : "";
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll(".code-block").forEach(function (block) {
      var code = block.querySelector("code");
      if (!code) {
        return;
      }
      var language = LANGUAGES[block.dataset.lang] !== undefined ? LANGUAGES[block.dataset.lang] : block.dataset.lang;
      var head = document.createElement("div");
      head.className = "code-head";
      var name = document.createElement("span");
      name.textContent = language || "text";
      var button = document.createElement("button");
      button.type = "button";
      button.className = "copy-button";
      button.textContent = "Copy";
      var heading = headingOf(block);
      button.setAttribute("aria-label", "Copy " + (language ? language + " " : "") + "code" + (heading ? ": " + heading : ""));
      head.appendChild(name);
      head.appendChild(button);
      block.insertBefore(head, block.firstChild);
      attach(button, function () { return code.textContent; }, "The code");
    });
    document.querySelectorAll("button[data-copy]").forEach(function (button) {
      var target = document.getElementById(button.dataset.copy);
      if (!target) {
        return;
      }
      attach(button, function () {
        return "value" in target ? target.value : target.textContent;
      }, button.dataset.copyLabel || "The text");
    });
  });
})();
