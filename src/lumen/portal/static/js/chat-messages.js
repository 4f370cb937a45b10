// How the chat page shows one message: its text (an answer as Markdown, through chat-render.js),
// attachments, tokens, coins and time to first token, its alternatives (‹ 1/2 ›) and its
// buttons; and refusals in plain words.
(function () {
  "use strict";

  function bytes(size) {
    if (size >= 1000000) {
      return (size / 1000000).toFixed(1).replace(/\.0$/, "") + " MB";
    }
    if (size >= 1000) {
      return Math.round(size / 1000) + " kB";
    }
    return size + " bytes";
  }

  function coins(value) {
    var number = Number(value);
    if (!number) {
      return "0 coins";
    }
    if (number >= 0.01) {
      return number.toFixed(number >= 100 ? 0 : 2) + " coins";
    }
    return Number(number.toPrecision(2)).toString() + " coins";
  }

  // A refusal or failure, in plain words (the server's own message follows where it helps).
  function plainError(status, code, message) {
    if (code === "insufficient_quota") {
      return ["You are out of coins for now.", message];
    }
    if (code === "rate_limit_exceeded" || status === 429) {
      return ["You are sending requests faster than your limit allows. Wait a moment, then try again.", message];
    }
    if (code === "acknowledgement_required") {
      return ["This model asks you to read and acknowledge its notice first. The notice is above the conversation.", ""];
    }
    if (code === "model_not_allowed" || (status === 403 && code !== "csrf_failed")) {
      return ["You are not allowed to use this model. Choose another model, or ask your Lumen administrator for access.", ""];
    }
    if (code === "model_not_found") {
      return ["This model is not available any more. Choose another model.", ""];
    }
    if (status === 502 || status === 503 || status === 504 || code === "model_unavailable") {
      return ["The model is not answering right now: its server is down or overloaded. Try again in a moment, or choose another model.", message];
    }
    if (status === 401) {
      return ["Your session has ended. Log in again; your conversation is saved.", ""];
    }
    if (status === 0) {
      return ["Lumen could not be reached. Check your connection and try again.", ""];
    }
    return [message || "Something went wrong.", ""];
  }

  function meta(message) {
    var parts = [];
    if (message.prompt_tokens !== null || message.completion_tokens !== null) {
      parts.push(
        (message.prompt_tokens || 0).toLocaleString() + " in · " + (message.completion_tokens || 0).toLocaleString() + " out tokens"
      );
    }
    if (message.cost !== null) {
      parts.push(coins(message.cost));
    }
    if (message.ttft_ms !== null) {
      parts.push("first token after " + Math.round(message.ttft_ms).toLocaleString() + " ms");
    }
    if (message.model) {
      parts.unshift(message.model);
    }
    return parts.join(" · ");
  }

  function button(label, onClick, extra) {
    var b = document.createElement("button");
    b.type = "button";
    b.className = "message-action";
    b.textContent = label;
    if (extra) {
      b.setAttribute("aria-label", extra);
    }
    b.addEventListener("click", onClick);
    return b;
  }

  function switcher(message, onSwitch) {
    var ids = message.sibling_ids;
    var index = ids.indexOf(message.id);
    var box = document.createElement("div");
    box.className = "versions";
    box.setAttribute("role", "group");
    box.setAttribute("aria-label", "Versions of this " + (message.role === "user" ? "message" : "answer"));
    var previous = button("‹", function () {
      onSwitch(ids[index - 1]);
    }, "Previous version");
    previous.disabled = index <= 0;
    var next = button("›", function () {
      onSwitch(ids[index + 1]);
    }, "Next version");
    next.disabled = index >= ids.length - 1;
    var label = document.createElement("span");
    label.className = "version-label";
    label.textContent = index + 1 + " / " + ids.length;
    box.appendChild(previous);
    box.appendChild(label);
    box.appendChild(next);
    return box;
  }

  function attachmentList(attachments) {
    var list = document.createElement("ul");
    list.className = "message-attachments";
    attachments.forEach(function (attachment) {
      var li = document.createElement("li");
      li.textContent = "📎 " + attachment.name + " (" + bytes(attachment.size) + ")";
      list.appendChild(li);
    });
    return list;
  }

  // One message as an <article>. `actions` holds what its buttons do: edit(node),
  // regenerate(), switchTo(id); `last` says it ends the shown branch (a question without answer).
  function article(message, actions, last) {
    var node = document.createElement("article");
    node.className = "message " + message.role + (message.stopped ? " stopped" : "");
    node.dataset.id = message.id;
    var heading = document.createElement("h2");
    heading.className = "visually-hidden";
    heading.textContent = message.role === "user" ? "You" : "Answer" + (message.model ? " from " + message.model : "");
    node.appendChild(heading);
    var body = document.createElement("div");
    body.className = "message-body";
    if (message.role === "assistant") {
      body.classList.add("markdown");
      if (message.content) {
        window.lumenChatRender.renderMarkdown(body, message.content);
      } else {
        body.textContent = message.stopped ? "(Stopped before the model wrote anything.)" : "";
      }
    } else {
      body.textContent = message.content;
    }
    node.appendChild(body);
    if (message.attachments && message.attachments.length) {
      node.appendChild(attachmentList(message.attachments));
    }
    var footer = document.createElement("div");
    footer.className = "message-footer";
    if (message.role === "assistant") {
      var info = document.createElement("p");
      info.className = "message-meta";
      info.textContent = meta(message);
      if (message.stopped) {
        var tag = document.createElement("span");
        tag.className = "tag";
        tag.textContent = "Stopped";
        info.prepend(tag, " ");
      } else if (message.finish_reason === "length") {
        var cut = document.createElement("span");
        cut.className = "tag";
        cut.textContent = "Cut at the token limit";
        info.prepend(cut, " ");
      }
      footer.appendChild(info);
    }
    var bar = document.createElement("div");
    bar.className = "message-actions";
    if (!actions) {
      footer.appendChild(bar); // not stored yet: no actions
      node.appendChild(footer);
      return node;
    }
    if (message.sibling_ids && message.sibling_ids.length > 1) {
      bar.appendChild(switcher(message, actions.switchTo));
    }
    bar.appendChild(
      window.lumenChatRender.copyButton(message.role === "user" ? "Copy" : "Copy answer", function () {
        return message.content;
      })
    );
    if (message.role === "user") {
      bar.appendChild(button("Edit", function () {
        actions.edit(node);
      }, "Edit and send again"));
      if (last) {
        bar.appendChild(button("Get an answer", actions.regenerate));
      }
    } else {
      bar.appendChild(button("Regenerate", actions.regenerate, "Regenerate this answer"));
    }
    footer.appendChild(bar);
    node.appendChild(footer);
    return node;
  }

  window.lumenChatMessages = {
    article: article,
    button: button,
    bytes: bytes,
    plainError: plainError,
  };
})();
