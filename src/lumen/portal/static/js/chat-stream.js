// The chat page's answers as they arrive: the POST that starts one, the server-sent-event reader,
// Stop (the answer so far is kept), and finding the stopped answer once the server has stored it.
// chat.js owns the page's state and hands it over through init().
(function () {
  "use strict";

  var el;
  var state;
  var render;
  var view;
  var sidebar;
  var modelName;
  var api;
  var apiError;
  var conversationUrl;
  var announce;
  var setBalance;
  var renderMessages;
  var scrollDown;
  var showError;
  var reload;
  var showConversation;
  var restore;

  function init(chat) {
    el = chat.el;
    state = chat.state;
    render = chat.render;
    view = chat.view;
    sidebar = chat.sidebar;
    modelName = chat.modelName;
    api = chat.api;
    apiError = chat.apiError;
    conversationUrl = chat.conversationUrl;
    announce = chat.announce;
    setBalance = chat.setBalance;
    renderMessages = chat.renderMessages;
    scrollDown = chat.scrollDown;
    showError = chat.showError;
    reload = chat.reload;
    showConversation = chat.showConversation;
    restore = chat.restore;
  }


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

  window.lumenChatStream = {
    init: init,
    stream: stream,
    stop: stop,
  };
})();
