// The chat page: one conversation at a time, its model and settings, streamed answers with Stop,
// regenerate, edit and alternatives, attachments, and the acknowledgement of a model's notice.
// Conversations live on the server (/api/chat); answers stream from
// POST /api/chat/conversations/{id}/messages and friends as server-sent events.
(function () {
  "use strict";

  var render;
  var view; // chat-messages.js
  var sidebar;
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
  var MODEL_KEY = "lumen-chat-model";
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

  // --- the model picker and the notice ----------------------------------------------------------

  function option() {
    return el.model.selectedOptions[0] || null;
  }

  function modelName() {
    var selected = option();
    return selected ? selected.value : "";
  }

  function takesImages() {
    var selected = option();
    return !!selected && selected.dataset.images === "yes";
  }

  function needsAck() {
    var selected = option();
    return !!selected && selected.dataset.needsAck === "yes";
  }

  function showModel() {
    var selected = option();
    if (!selected) {
      el.modelInfo.textContent = "";
      el.ack.hidden = true;
      return;
    }
    var data = selected.dataset;
    var free = Number(data.priceInput) === 0 && Number(data.priceOutput) === 0;
    var parts = [
      free ? "Free" : "Coins per million tokens: " + data.priceInput + " input, " + data.priceOutput + " output",
    ];
    if (data.context) {
      parts.push("context " + Number(data.context).toLocaleString() + " tokens");
    }
    parts.push("takes " + data.capabilities);
    if (data.available !== "yes") {
      parts.push("currently unavailable");
    }
    var description = document.createElement("span");
    description.className = "model-description";
    description.textContent = data.description ? data.description + " · " : "";
    el.modelInfo.replaceChildren(description, parts.join(" · "));
    el.ack.hidden = data.needsAck !== "yes";
    if (data.needsAck === "yes") {
      el.ackModel.textContent = selected.value;
      render.renderMarkdown(el.ackText, data.notice); // the administrator's notice, in Markdown
      el.ackStatus.textContent = "";
    }
    el.fileInput.accept = takesImages()
      ? ".txt,.md,.csv,.json,.py,.js,.ts,.html,.css,.xml,.yaml,.yml,.tex,.pdf,text/*,application/pdf,image/png,image/jpeg,image/gif,image/webp"
      : ".txt,.md,.csv,.json,.py,.js,.ts,.html,.css,.xml,.yaml,.yml,.tex,.pdf,text/*,application/pdf";
  }

  function selectModel(name) {
    for (var i = 0; i < el.model.options.length; i++) {
      if (el.model.options[i].value === name) {
        el.model.selectedIndex = i;
        return true;
      }
    }
    return false;
  }

  function onModelChange() {
    showModel();
    try {
      window.localStorage.setItem(MODEL_KEY, modelName());
    } catch (e) {
      // Not remembered: the default applies next time.
    }
    if (state.conversation && state.conversation.model !== modelName()) {
      var name = modelName();
      api(conversationUrl(), json("PATCH", { model: name })).then(function (conversation) {
        state.conversation.model = conversation.model;
      }, function () {});
    }
  }

  function acknowledge() {
    var selected = option();
    if (!selected) {
      return;
    }
    el.ackButton.disabled = true;
    api(
      "/api/chat/models/" + encodeURIComponent(selected.value) + "/acknowledge",
      json("POST", { notice_hash: selected.dataset.noticeHash || null })
    ).then(
      function () {
        selected.dataset.needsAck = "no";
        el.ackButton.disabled = false;
        el.ack.hidden = true;
        composerError("");
        announce("Notice acknowledged. You can use " + selected.value + " now.");
        el.input.focus();
      },
      function (error) {
        el.ackButton.disabled = false;
        el.ackStatus.textContent = "Could not record your acknowledgement: " + error.message;
      }
    );
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
    if (conversation.model && !selectModel(conversation.model)) {
      composerError("This conversation used " + conversation.model + ", which you cannot use now. Choose another model.");
    }
    showModel();
    el.systemPrompt.value = conversation.system_prompt;
    el.temperature.value = conversation.temperature === null ? "" : conversation.temperature;
    el.maxTokens.value = conversation.max_tokens === null ? "" : conversation.max_tokens;
    sidebar.setCurrent(conversation.id);
    renderMessages();
  }

  function newChat(push) {
    if (state.stream) {
      stop();
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
      stop();
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
      model: modelName() || null,
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

  // --- streaming --------------------------------------------------------------------------------

  function setStreaming(on) {
    el.stop.hidden = !on;
    el.send.disabled = on;
    el.composer.classList.toggle("streaming", on);
  }

  function readEvents(response, onEvent) {
    var reader = response.body.getReader();
    var decoder = new TextDecoder();
    var buffer = "";
    function pump() {
      return reader.read().then(function (chunk) {
        if (chunk.done) {
          return;
        }
        buffer += decoder.decode(chunk.value, { stream: true });
        var end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          var block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          var name = "message";
          var data = "";
          block.split("\n").forEach(function (line) {
            if (line.indexOf("event: ") === 0) {
              name = line.slice(7);
            } else if (line.indexOf("data: ") === 0) {
              data += line.slice(6);
            }
          });
          if (data) {
            onEvent(name, JSON.parse(data));
          }
        }
        return pump();
      });
    }
    return pump();
  }

  function streamingArticle() {
    var node = document.createElement("article");
    node.className = "message assistant streaming";
    var heading = document.createElement("h2");
    heading.className = "visually-hidden";
    heading.textContent = "Answer from " + modelName();
    var body = document.createElement("div");
    body.className = "message-body markdown";
    var waiting = document.createElement("p");
    waiting.className = "typing";
    waiting.textContent = "Waiting for " + modelName() + "…";
    body.appendChild(waiting);
    node.appendChild(heading);
    node.appendChild(body);
    return node;
  }

  // Starts an answer: `keep` messages of the shown branch stay (what follows is replaced), and
  // `pending` (the text being sent) shows at once until the server confirms it as stored.
  function stream(url, body, keep, pending) {
    var controller = new AbortController();
    var known = state.messages.map(function (m) {
      return m.id;
    });
    state.messages = state.messages.slice(0, keep);
    renderMessages();
    if (el.empty.parentNode) {
      el.empty.remove();
    }
    if (pending) {
      var placeholder = view.article(
        { id: "pending", role: "user", content: pending.content, attachments: pending.attachments, stopped: false },
        null,
        false
      );
      el.messages.appendChild(placeholder);
    }
    var node = streamingArticle();
    el.messages.appendChild(node);
    scrollDown(true);
    var current = { controller: controller, text: "", node: node, body: node.querySelector(".message-body"), stopped: false, scheduled: false };
    state.stream = current;
    setStreaming(true);
    announce("Generating an answer with " + modelName() + ".");

    function paint() {
      current.scheduled = false;
      render.renderMarkdown(current.body, current.text);
      scrollDown(false);
    }

    function onEvent(name, data) {
      if (name === "user") {
        var pendingNode = el.messages.querySelector('[data-id="pending"]');
        state.messages.push(data.message);
        var real = view.article(data.message, null, false); // its buttons come with the answer
        if (pendingNode) {
          pendingNode.replaceWith(real);
        } else {
          el.messages.insertBefore(real, node);
        }
        if (data.title) {
          state.conversation.title = data.title;
          el.title.textContent = data.title;
          sidebar.upsert(state.conversation);
        }
      } else if (name === "delta") {
        current.text += data.text;
        if (!current.scheduled) {
          current.scheduled = true;
          window.requestAnimationFrame(paint);
        }
      } else if (name === "done" || name === "error") {
        if (data.message) {
          state.messages.push(data.message);
        }
        setBalance(data.balance);
        finish();
        if (name === "done") {
          sidebar.upsert(state.conversation);
          announce("Answer finished. " + data.message.content.slice(0, 1500));
        } else {
          showError(apiError(data.error.status, { error: data.error }), true);
        }
      }
    }

    function finish() {
      state.stream = null;
      setStreaming(false);
      renderMessages();
    }

    window.lumen
      .fetch(url, {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
        body: JSON.stringify(body),
        signal: controller.signal,
      })
      .then(function (response) {
        if (!response.ok) {
          return response
            .json()
            .catch(function () {
              return {};
            })
            .then(function (error) {
              throw apiError(response.status, error);
            });
        }
        return readEvents(response, onEvent);
      })
      .then(
        function () {
          if (state.stream === current) {
            // The stream ended without its last event (a proxy cut it): show what the server kept.
            finish();
            reload();
          }
        },
        function (error) {
          if (current.stopped) {
            afterStop(known, pending);
            return;
          }
          if (state.stream !== current) {
            return;
          }
          finish();
          var failed = error.status === undefined ? apiError(0, null) : error;
          // The message may have been stored before the refusal: show what the server has.
          reload().then(function (conversation) {
            var messages = conversation ? conversation.messages : [];
            var last = messages[messages.length - 1];
            if (!(last && last.role === "user" && known.indexOf(last.id) < 0)) {
              restore(pending); // refused before it was stored: the text goes back to the box
            }
            showError(failed, true);
          }, function () {
            showError(failed, false);
          });
        }
      );
  }

  function stop() {
    var current = state.stream;
    if (!current) {
      return;
    }
    current.stopped = true;
    state.stream = null;
    setStreaming(false);
    current.controller.abort();
    current.node.classList.remove("streaming");
    current.node.classList.add("stopped");
    if (!current.text) {
      current.body.textContent = "Stopped.";
    }
    announce("Stopped. The answer so far is kept.");
    el.input.focus();
  }

  // The server stores a stopped answer once it notices the page went away: show it when it is there.
  // (A message stopped before it reached the server was never stored: its text goes back to the box.)
  function afterStop(known, pending) {
    var tries = 0;
    function check() {
      tries++;
      return api(conversationUrl()).then(function (conversation) {
        var fresh = conversation.messages.filter(function (m) {
          return known.indexOf(m.id) < 0;
        });
        var last = conversation.messages[conversation.messages.length - 1];
        var stored = last && last.role === "assistant" && fresh.indexOf(last) >= 0;
        var lost = pending && !fresh.length && tries >= 3;
        if (stored || lost || tries >= 20) {
          if (!state.stream && state.conversation && state.conversation.id === conversation.id) {
            showConversation(conversation);
            if (lost) {
              restore(pending);
            }
            el.input.focus();
          }
          return;
        }
        return new Promise(function (resolve) {
          setTimeout(resolve, 150 * tries);
        }).then(check);
      });
    }
    if (state.conversation) {
      check().catch(function () {});
    }
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
    if (!modelName()) {
      composerError("Choose a model first.");
      return;
    }
    if (needsAck()) {
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
        stream(
          conversationUrl("/messages"),
          { content: content, attachments: pending.attachments, model: modelName() },
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
    if (needsAck()) {
      el.ack.hidden = false;
      el.ackButton.focus();
      return;
    }
    var keep = message.role === "user" ? index + 1 : index;
    stream(conversationUrl("/messages/" + message.id + "/regenerate"), { model: modelName() }, keep, null);
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
      if (needsAck()) {
        el.ack.hidden = false;
        el.ackButton.focus();
        return;
      }
      var content = area.value;
      stream(
        conversationUrl("/messages/" + message.id + "/edit"),
        { content: content, model: modelName() },
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
    if (limit[0] === "images" && !takesImages()) {
      composerError(modelName() + " does not take images. Choose a model that does, or attach text or a PDF.");
      return Promise.resolve();
    }
    composerError("Reading “" + file.name + "”…");
    return api("/api/chat/attachments?name=" + encodeURIComponent(file.name), {
      method: "POST",
      headers: { "Content-Type": "application/octet-stream" },
      body: file,
    }).then(
      function (attachment) {
        if (attachment.kind === "image" && !takesImages()) {
          composerError(modelName() + " does not take images. Choose a model that does, or attach text or a PDF.");
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

  // --- settings and the phone layout -----------------------------------------------------------

  function saveSettings(event) {
    event.preventDefault();
    var temperature = el.temperature.value === "" ? null : Number(el.temperature.value);
    var maxTokens = el.maxTokens.value === "" ? null : Number(el.maxTokens.value);
    var values = { system_prompt: el.systemPrompt.value, temperature: temperature, max_tokens: maxTokens };
    if (!state.conversation) {
      state.settings = values;
      el.settingsStatus.textContent = "Saved for this new chat.";
      return;
    }
    api(conversationUrl(), json("PATCH", values)).then(
      function (conversation) {
        state.conversation.system_prompt = conversation.system_prompt;
        state.conversation.temperature = conversation.temperature;
        state.conversation.max_tokens = conversation.max_tokens;
        el.settingsStatus.textContent = "Saved.";
      },
      function (error) {
        el.settingsStatus.textContent = "Not saved: " + error.message;
      }
    );
  }

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
        stop();
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
    el.stop.addEventListener("click", stop);
    el.model.addEventListener("change", onModelChange);
    el.ackButton.addEventListener("click", acknowledge);
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
    el.settingsForm.addEventListener("submit", saveSettings);
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
    var remembered = null;
    try {
      remembered = window.localStorage.getItem(MODEL_KEY);
    } catch (e) {
      remembered = null;
    }
    if (remembered) {
      selectModel(remembered);
    }
    showModel();
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
