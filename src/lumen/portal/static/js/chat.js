// The chat page: one conversation at a time, its model and settings, streamed answers with Stop,
// regenerate, edit and alternatives, attachments, and the acknowledgement of a model's notice.
// Conversations live on the server (/api/chat); answers stream from
// POST /api/chat/conversations/{id}/messages and friends as server-sent events.
// The model picker and settings live in chat-settings.js, streaming and Stop in chat-stream.js.
(function () {
  "use strict";

  var render;
  var view; // chat-messages.js
  var sidebar;
  var panel; // chat-settings.js
  var streamer; // chat-stream.js
  var app;
  var el = {};
  var limits = {};
  var state = {
    conversation: null, // the open conversation (ConversationPublic without its messages)
    messages: [], // its shown branch, oldest first
    stream: null, // the answer being received: {controller, answer, article, body, stopped}
    attachments: [], // uploaded files waiting to be sent with the next message
    settings: { system_prompt: "", temperature: null, max_tokens: null }, // of a chat not yet created
  };
  var siteName = "";

  // --- small helpers ----------------------------------------------------------------------------

  function apiError(status, body) {
    var error = new Error(
      (body && body.error && body.error.message) ||
        (body && Array.isArray(body.detail) && body.detail[0] && body.detail[0].msg) ||
        "The request failed."
    );
    error.status = status;
    error.code = body && body.error ? body.error.code : null;
    return error;
  }

  function api(url, options) {
    return window.lumen.fetch(url, options).then(
      function (response) {
        if (response.status === 204) {
          return null;
        }
        return response
          .json()
          .catch(function () {
            return {};
          })
          .then(function (body) {
            if (!response.ok) {
              throw apiError(response.status, body);
            }
            return body;
          });
      },
      function () {
        throw apiError(0, null);
      }
    );
  }

  function json(method, body) {
    return { method: method, headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
  }

  function conversationUrl(suffix) {
    return "/api/chat/conversations/" + encodeURIComponent(state.conversation.id) + (suffix || "");
  }

  function announce(text) {
    // Cleared first, so the same words are announced again.
    el.live.textContent = "";
    setTimeout(function () {
      el.live.textContent = text;
    }, 50);
  }

  function setBalance(text) {
    var balance = document.getElementById("balance");
    if (balance && text) {
      balance.textContent = text;
    }
  }

  function composerError(text) {
    el.composerError.textContent = text || "";
  }

  // --- messages ---------------------------------------------------------------------------------

  function messageArticle(message, index) {
    return view.article(
      message,
      {
        edit: function (node) {
          startEdit(node, message, index);
        },
        regenerate: function () {
          regenerate(message, index);
        },
        switchTo: showBranch,
      },
      index === state.messages.length - 1
    );
  }

  function renderMessages() {
    el.messages.replaceChildren();
    if (!state.messages.length) {
      el.messages.appendChild(el.empty);
    }
    state.messages.forEach(function (message, index) {
      el.messages.appendChild(messageArticle(message, index));
    });
    scrollDown(true);
  }

  function nearBottom() {
    var box = el.messages;
    return box.scrollHeight - box.scrollTop - box.clientHeight < 80;
  }

  function scrollDown(force) {
    if (force || nearBottom()) {
      el.messages.scrollTop = el.messages.scrollHeight;
    }
  }

  function showError(error, canRetry) {
    var words = view.plainError(error.status, error.code, error.message);
    var node = document.createElement("div");
    node.className = "message-error";
    node.setAttribute("role", "alert");
    var text = document.createElement("p");
    text.textContent = words[0];
    node.appendChild(text);
    if (words[1] && words[1] !== words[0]) {
      var detail = document.createElement("p");
      detail.className = "error-detail";
      detail.textContent = words[1];
      node.appendChild(detail);
    }
    var last = state.messages[state.messages.length - 1];
    if (canRetry && last && last.role === "user") {
      node.appendChild(view.button("Try again", function () {
        regenerate(last, state.messages.length - 1);
      }));
    }
    el.messages.appendChild(node);
    scrollDown(true);
    if (error.code === "acknowledgement_required") {
      el.ack.hidden = false;
      el.ackButton.focus();
    }
  }

  // --- conversations ----------------------------------------------------------------------------

  function showConversation(conversation) {
    state.conversation = conversation;
    state.messages = conversation.messages;
    el.title.textContent = conversation.title;
    document.title = conversation.title + " · " + siteName;
    if (conversation.model && !panel.selectModel(conversation.model)) {
      composerError("This conversation used " + conversation.model + ", which you cannot use now. Choose another model.");
    }
    panel.showModel();
    el.systemPrompt.value = conversation.system_prompt;
    el.temperature.value = conversation.temperature === null ? "" : conversation.temperature;
    el.maxTokens.value = conversation.max_tokens === null ? "" : conversation.max_tokens;
    sidebar.setCurrent(conversation.id);
    renderMessages();
  }

  function newChat(push) {
    if (state.stream) {
      streamer.stop();
    }
    state.conversation = null;
    state.messages = [];
    el.title.textContent = "New chat";
    document.title = "Chat · " + siteName;
    el.systemPrompt.value = state.settings.system_prompt;
    el.temperature.value = state.settings.temperature === null ? "" : state.settings.temperature;
    el.maxTokens.value = state.settings.max_tokens === null ? "" : state.settings.max_tokens;
    composerError("");
    sidebar.setCurrent("");
    renderMessages();
    if (push) {
      window.history.pushState({}, "", "/chat");
    }
  }

  function open(id, push) {
    if (state.stream) {
      streamer.stop();
    }
    composerError("");
    return api("/api/chat/conversations/" + encodeURIComponent(id)).then(
      function (conversation) {
        if (push) {
          window.history.pushState({}, "", "/chat/" + encodeURIComponent(conversation.id));
        }
        showConversation(conversation);
        closeSidebar(false);
        el.input.focus();
      },
      function (error) {
        newChat(false);
        composerError(
          error.status === 404
            ? "This conversation does not exist (it may have been deleted). You can start a new one."
            : "Could not open the conversation: " + error.message
        );
      }
    );
  }

  function reload() {
    if (!state.conversation) {
      return Promise.resolve(null);
    }
    return api(conversationUrl()).then(function (conversation) {
      showConversation(conversation);
      return conversation;
    });
  }

  function showBranch(messageId) {
    if (state.stream || messageId === undefined) {
      return;
    }
    api(conversationUrl("/branch"), json("PUT", { message_id: messageId })).then(
      function (conversation) {
        showConversation(conversation);
        var node = el.messages.querySelector('[data-id="' + messageId + '"] .versions button:not([disabled])');
        if (node) {
          node.focus();
        }
        var shown = conversation.messages.filter(function (m) {
          return m.id === messageId;
        })[0];
        if (shown) {
          announce("Showing version " + (shown.sibling_ids.indexOf(messageId) + 1) + " of " + shown.sibling_ids.length + ".");
        }
      },
      function (error) {
        composerError("Could not switch versions: " + error.message);
      }
    );
  }

  function ensureConversation() {
    if (state.conversation) {
      return Promise.resolve(state.conversation);
    }
    var body = {
      model: panel.modelName() || null,
      system_prompt: state.settings.system_prompt,
      temperature: state.settings.temperature,
      max_tokens: state.settings.max_tokens,
    };
    return api("/api/chat/conversations", json("POST", body)).then(function (conversation) {
      state.conversation = conversation;
      state.messages = [];
      window.history.pushState({}, "", "/chat/" + encodeURIComponent(conversation.id));
      sidebar.upsert(conversation);
      sidebar.setCurrent(conversation.id);
      return conversation;
    });
  }

  // --- sending, editing, regenerating -----------------------------------------------------------

  function payloadSize(content) {
    return state.attachments.reduce(function (total, a) {
      return total + (a.text ? a.text.length * 2 : 0) + (a.data_url ? a.data_url.length : 0);
    }, content.length * 2 + 200);
  }

  // Puts a message that was not stored back into the message box (unless something new is there).
  function restore(pending) {
    if (!pending || !pending.fromComposer || el.input.value || state.attachments.length) {
      return;
    }
    el.input.value = pending.content;
    state.attachments = pending.attachments.slice();
    renderAttachments();
  }

  function send() {
    if (state.stream) {
      return;
    }
    var content = el.input.value;
    if (!content.trim() && !state.attachments.length) {
      el.input.focus();
      return;
    }
    if (!panel.modelName()) {
      composerError("Choose a model first.");
      return;
    }
    if (panel.needsAck()) {
      composerError("Acknowledge the model's notice (above) before you send.");
      el.ack.hidden = false;
      el.ackButton.focus();
      return;
    }
    if (payloadSize(content) > limits.message) {
      composerError("This message with its attachments is larger than " + view.bytes(limits.message) + ". Remove an attachment or shorten the text.");
      return;
    }
    composerError("");
    var pending = { content: content, attachments: state.attachments.slice(), fromComposer: true };
    el.input.value = "";
    state.attachments = [];
    renderAttachments();
    ensureConversation().then(
      function () {
        streamer.stream(
          conversationUrl("/messages"),
          { content: content, attachments: pending.attachments, model: panel.modelName() },
          state.messages.length,
          pending
        );
      },
      function (error) {
        restore(pending);
        composerError(view.plainError(error.status, error.code, error.message).join(" "));
      }
    );
  }

  function regenerate(message, index) {
    if (state.stream || !state.conversation) {
      return;
    }
    if (panel.needsAck()) {
      el.ack.hidden = false;
      el.ackButton.focus();
      return;
    }
    var keep = message.role === "user" ? index + 1 : index;
    streamer.stream(
      conversationUrl("/messages/" + message.id + "/regenerate"),
      { model: panel.modelName() },
      keep,
      null
    );
  }

  function startEdit(node, message, index) {
    if (state.stream) {
      return;
    }
    var body = node.querySelector(".message-body");
    var footer = node.querySelector(".message-footer");
    var form = document.createElement("form");
    form.className = "edit-form";
    var label = document.createElement("label");
    label.className = "visually-hidden";
    label.textContent = "Edit your message";
    var area = document.createElement("textarea");
    area.id = "edit-" + message.id;
    label.htmlFor = area.id;
    area.value = message.content;
    area.rows = Math.min(12, Math.max(3, message.content.split("\n").length + 1));
    var save = document.createElement("button");
    save.type = "submit";
    save.className = "button primary";
    save.textContent = "Send";
    var cancel = document.createElement("button");
    cancel.type = "button";
    cancel.className = "button secondary";
    cancel.textContent = "Cancel";
    var buttons = document.createElement("div");
    buttons.className = "edit-buttons";
    buttons.appendChild(cancel);
    buttons.appendChild(save);
    form.appendChild(label);
    form.appendChild(area);
    form.appendChild(buttons);
    body.hidden = true;
    footer.hidden = true;
    node.insertBefore(form, footer);
    area.focus();

    function close() {
      form.remove();
      body.hidden = false;
      footer.hidden = false;
      var edit = node.querySelector(".message-action[aria-label='Edit and send again']");
      if (edit) {
        edit.focus();
      }
    }
    cancel.addEventListener("click", close);
    area.addEventListener("keydown", function (event) {
      if (event.key === "Escape") {
        event.preventDefault();
        event.stopPropagation();
        close();
      } else if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        form.requestSubmit();
      }
    });
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      if (!area.value.trim() && !(message.attachments && message.attachments.length)) {
        area.focus();
        return;
      }
      if (panel.needsAck()) {
        el.ack.hidden = false;
        el.ackButton.focus();
        return;
      }
      var content = area.value;
      streamer.stream(
        conversationUrl("/messages/" + message.id + "/edit"),
        { content: content, model: panel.modelName() },
        index,
        { content: content, attachments: message.attachments }
      );
      el.input.focus();
    });
  }

  // --- attachments ------------------------------------------------------------------------------

  function renderAttachments() {
    el.attachments.replaceChildren();
    state.attachments.forEach(function (attachment, index) {
      var li = document.createElement("li");
      li.className = "attachment";
      var name = document.createElement("span");
      name.textContent = attachment.name + " · " + view.bytes(attachment.size) +
        (attachment.kind === "image" ? " · image" : " · " + attachment.text_chars.toLocaleString() + " characters");
      var remove = document.createElement("button");
      remove.type = "button";
      remove.className = "icon-button";
      remove.textContent = "✕";
      remove.setAttribute("aria-label", "Remove " + attachment.name);
      remove.addEventListener("click", function () {
        state.attachments.splice(index, 1);
        renderAttachments();
        el.attach.focus();
      });
      li.appendChild(name);
      li.appendChild(remove);
      el.attachments.appendChild(li);
    });
  }

  function limitFor(file) {
    if (/^image\//.test(file.type)) {
      return ["images", limits.image];
    }
    if (file.type === "application/pdf" || /\.pdf$/i.test(file.name)) {
      return ["PDFs", limits.pdf];
    }
    return ["text files", limits.text];
  }

  function upload(file) {
    if (state.attachments.length >= limits.count) {
      composerError("A message can have at most " + limits.count + " attachments.");
      return Promise.resolve();
    }
    var limit = limitFor(file);
    if (file.size > limit[1]) {
      composerError("“" + file.name + "” is " + view.bytes(file.size) + "; the limit for " + limit[0] + " is " + view.bytes(limit[1]) + ".");
      return Promise.resolve();
    }
    if (limit[0] === "images" && !panel.takesImages()) {
      composerError(panel.modelName() + " does not take images. Choose a model that does, or attach text or a PDF.");
      return Promise.resolve();
    }
    composerError("Reading “" + file.name + "”…");
    return api("/api/chat/attachments?name=" + encodeURIComponent(file.name), {
      method: "POST",
      headers: { "Content-Type": "application/octet-stream" },
      body: file,
    }).then(
      function (attachment) {
        if (attachment.kind === "image" && !panel.takesImages()) {
          composerError(panel.modelName() + " does not take images. Choose a model that does, or attach text or a PDF.");
          return;
        }
        state.attachments.push(attachment);
        renderAttachments();
        composerError("");
        announce("Attached " + attachment.name + ".");
      },
      function (error) {
        composerError(error.message);
      }
    );
  }

  function uploadAll(files) {
    var queue = Array.prototype.slice.call(files);
    function next() {
      if (!queue.length) {
        return Promise.resolve();
      }
      return upload(queue.shift()).then(next);
    }
    return next();
  }

  // --- the phone layout -------------------------------------------------------------------------

  function openSidebar() {
    app.classList.add("sidebar-open");
    el.sidebarOpen.setAttribute("aria-expanded", "true");
    document.getElementById("chat-search").focus();
  }

  function closeSidebar(focus) {
    if (!app.classList.contains("sidebar-open")) {
      return;
    }
    app.classList.remove("sidebar-open");
    el.sidebarOpen.setAttribute("aria-expanded", "false");
    if (focus) {
      el.sidebarOpen.focus();
    }
  }

  // --- start ------------------------------------------------------------------------------------

  function bind() {
    el.composer.addEventListener("submit", function (event) {
      event.preventDefault();
      send();
    });
    el.input.addEventListener("keydown", function (event) {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        send();
      }
    });
    document.addEventListener("keydown", function (event) {
      if (event.key !== "Escape") {
        return;
      }
      if (state.stream) {
        event.preventDefault();
        streamer.stop();
      } else if (el.settings.open) {
        el.settings.open = false;
        el.settings.querySelector("summary").focus();
      } else if (app.classList.contains("sidebar-open")) {
        closeSidebar(true);
      }
    });
    document.addEventListener("click", function (event) {
      if (el.settings.open && !el.settings.contains(event.target)) {
        el.settings.open = false;
      }
    });
    el.stop.addEventListener("click", streamer.stop);
    el.model.addEventListener("change", panel.onModelChange);
    el.ackButton.addEventListener("click", panel.acknowledge);
    el.attach.addEventListener("click", function () {
      el.fileInput.click();
    });
    el.fileInput.addEventListener("change", function () {
      uploadAll(el.fileInput.files).then(function () {
        el.fileInput.value = "";
        el.input.focus();
      });
    });
    el.composer.addEventListener("dragover", function (event) {
      event.preventDefault();
    });
    el.composer.addEventListener("drop", function (event) {
      event.preventDefault();
      if (event.dataTransfer && event.dataTransfer.files.length) {
        uploadAll(event.dataTransfer.files);
      }
    });
    el.settingsForm.addEventListener("submit", panel.saveSettings);
    el.sidebarOpen.addEventListener("click", openSidebar);
    el.sidebarClose.addEventListener("click", function () {
      closeSidebar(true);
    });
    document.getElementById("new-chat").addEventListener("click", function (event) {
      if (event.metaKey || event.ctrlKey || event.shiftKey) {
        return;
      }
      event.preventDefault();
      newChat(true);
      closeSidebar(false);
      el.input.focus();
    });
    window.addEventListener("popstate", function () {
      var match = /^\/chat\/([^/]+)$/.exec(window.location.pathname);
      if (match) {
        open(decodeURIComponent(match[1]), false);
      } else {
        newChat(false);
      }
    });
  }

  function start() {
    render = window.lumenChatRender;
    view = window.lumenChatMessages;
    sidebar = window.lumenChatSidebar;
    panel = window.lumenChatSettings;
    streamer = window.lumenChatStream;
    app = document.getElementById("chat-app");
    if (!app) {
      return;
    }
    [
      ["messages", "messages"], ["empty", "messages-empty"], ["live", "chat-live"], ["composer", "composer"],
      ["input", "message-input"], ["send", "send-button"], ["stop", "stop-button"], ["model", "model-select"],
      ["modelInfo", "model-info"], ["ack", "ack-notice"], ["ackModel", "ack-model"], ["ackText", "ack-text"],
      ["ackButton", "ack-button"], ["ackStatus", "ack-status"], ["title", "chat-title"],
      ["composerError", "composer-error"], ["attachments", "attachment-list"], ["attach", "attach-button"],
      ["fileInput", "file-input"], ["settingsForm", "settings-form"], ["settingsStatus", "settings-status"],
      ["systemPrompt", "system-prompt"], ["temperature", "temperature"], ["maxTokens", "max-tokens"],
      ["sidebarOpen", "sidebar-open"], ["sidebarClose", "sidebar-close"], ["settings", "chat-settings"],
    ].forEach(function (pair) {
      el[pair[0]] = document.getElementById(pair[1]);
    });
    siteName = document.title.split(" · ").slice(1).join(" · ");
    var data = app.dataset;
    limits = {
      count: Number(data.maxAttachments),
      message: Number(data.maxMessageBytes),
      text: Number(data.textBytes),
      pdf: Number(data.pdfBytes),
      image: Number(data.imageBytes),
    };
    var chat = {
      el: el,
      state: state,
      render: render,
      view: view,
      sidebar: sidebar,
      api: api,
      apiError: apiError,
      json: json,
      conversationUrl: conversationUrl,
      announce: announce,
      setBalance: setBalance,
      composerError: composerError,
      modelName: panel.modelName,
      renderMessages: renderMessages,
      scrollDown: scrollDown,
      showError: showError,
      reload: reload,
      showConversation: showConversation,
      restore: restore,
    };
    panel.init(chat);
    streamer.init(chat);
    panel.restoreModel();
    bind();
    var id = data.conversationId;
    sidebar.init({
      current: id,
      onOpen: function (conversationId) {
        open(conversationId, true);
      },
      onDeleted: function (conversationId) {
        if (state.conversation && state.conversation.id === conversationId) {
          newChat(true);
          el.input.focus();
        }
      },
      onRenamed: function (conversationId, title) {
        if (state.conversation && state.conversation.id === conversationId) {
          state.conversation.title = title;
          el.title.textContent = title;
        }
      },
    });
    if (id) {
      open(id, false);
    } else {
      newChat(false);
      el.input.focus();
    }
  }

  document.addEventListener("DOMContentLoaded", start);
})();
