// The chat page's conversation list: pages of 50 loaded as the list scrolls (the server pages with
// a cursor, so thousands of conversations cost one small query each), search over titles and
// messages, and rename, export and delete per conversation.
(function () {
  "use strict";

  var PAGE = 50;
  var list;
  var status;
  var loadMore;
  var search;
  var hooks;
  var cursor = null;
  var query = "";
  var loading = false;
  var generation = 0;
  var current = "";

  function api(url, options) {
    return window.lumen.fetch(url, options).then(function (response) {
      if (response.status === 204) {
        return null;
      }
      return response.json().then(function (body) {
        if (!response.ok) {
          var error = new Error((body.error && body.error.message) || "The request failed.");
          error.status = response.status;
          throw error;
        }
        return body;
      });
    });
  }

  function item(summary) {
    var li = document.createElement("li");
    li.className = "conversation";
    li.dataset.id = summary.id;

    var link = document.createElement("a");
    link.className = "conversation-link";
    link.href = "/chat/" + encodeURIComponent(summary.id);
    var title = document.createElement("span");
    title.className = "conversation-title";
    title.textContent = summary.title;
    link.appendChild(title);
    if (summary.snippet) {
      var snippet = document.createElement("span");
      snippet.className = "conversation-snippet";
      snippet.textContent = summary.snippet;
      link.appendChild(snippet);
    }
    if (summary.id === current) {
      link.setAttribute("aria-current", "page");
    }
    link.addEventListener("click", function (event) {
      if (event.metaKey || event.ctrlKey || event.shiftKey || event.button !== 0) {
        return; // a new tab or window: let the browser open it
      }
      event.preventDefault();
      hooks.onOpen(summary.id);
    });
    li.appendChild(link);
    li.appendChild(menu(summary, li));
    return li;
  }

  function menu(summary, li) {
    var details = document.createElement("details");
    details.className = "conversation-menu";
    var summaryEl = document.createElement("summary");
    summaryEl.className = "icon-button";
    summaryEl.setAttribute("aria-label", "Actions for " + summary.title);
    summaryEl.textContent = "⋯";
    details.appendChild(summaryEl);
    var panel = document.createElement("div");
    panel.className = "menu-panel";

    var rename = document.createElement("button");
    rename.type = "button";
    rename.textContent = "Rename";
    rename.addEventListener("click", function () {
      details.open = false;
      startRename(li);
    });
    panel.appendChild(rename);

    [
      ["markdown", "Export as Markdown"],
      ["json", "Export as JSON"],
    ].forEach(function (format) {
      var link = document.createElement("a");
      link.href =
        "/api/chat/conversations/" + encodeURIComponent(summary.id) + "/export?format=" + format[0];
      link.setAttribute("download", "");
      link.textContent = format[1];
      link.addEventListener("click", function () {
        details.open = false;
      });
      panel.appendChild(link);
    });

    var remove = document.createElement("button");
    remove.type = "button";
    remove.className = "danger-text";
    remove.textContent = "Delete";
    remove.addEventListener("click", function () {
      details.open = false;
      confirmDelete(li);
    });
    panel.appendChild(remove);
    details.appendChild(panel);
    details.addEventListener("keydown", function (event) {
      if (event.key === "Escape" && details.open) {
        event.stopPropagation();
        details.open = false;
        summaryEl.focus();
      }
    });
    return details;
  }

  function titleOf(li) {
    return li.querySelector(".conversation-title").textContent;
  }

  function startRename(li) {
    var link = li.querySelector(".conversation-link");
    var input = document.createElement("input");
    input.type = "text";
    input.className = "rename-input";
    input.value = titleOf(li);
    input.maxLength = 200;
    input.setAttribute("aria-label", "New name for " + titleOf(li));
    link.hidden = true;
    li.insertBefore(input, link);
    input.focus();
    input.select();
    var done = false;

    function finish(save) {
      if (done) {
        return;
      }
      done = true;
      var title = input.value.trim();
      input.remove();
      link.hidden = false;
      link.focus();
      if (!save || !title || title === titleOf(li)) {
        return;
      }
      api("/api/chat/conversations/" + encodeURIComponent(li.dataset.id), {
        method: "PATCH",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ title: title }),
      }).then(
        function (conversation) {
          setTitle(li.dataset.id, conversation.title);
          hooks.onRenamed(li.dataset.id, conversation.title);
          say("Renamed to " + conversation.title + ".");
        },
        function (error) {
          say("Could not rename: " + error.message);
        }
      );
    }

    input.addEventListener("keydown", function (event) {
      if (event.key === "Enter") {
        event.preventDefault();
        finish(true);
      } else if (event.key === "Escape") {
        event.preventDefault();
        event.stopPropagation();
        finish(false);
      }
    });
    input.addEventListener("blur", function () {
      finish(true);
    });
  }

  function confirmDelete(li) {
    var dialog = document.getElementById("confirm-dialog");
    document.getElementById("confirm-text").textContent =
      "“" + titleOf(li) + "” and all its messages will be deleted for good.";
    dialog.returnValue = "";
    dialog.onclose = null;
    dialog.addEventListener(
      "close",
      function () {
        if (dialog.returnValue !== "confirm") {
          var summary = li.querySelector("summary");
          if (summary) {
            summary.focus();
          }
          return;
        }
        api("/api/chat/conversations/" + encodeURIComponent(li.dataset.id), { method: "DELETE" }).then(
          function () {
            var id = li.dataset.id;
            var next = li.nextElementSibling || li.previousElementSibling;
            li.remove();
            say("Conversation deleted.");
            hooks.onDeleted(id);
            var focus = next ? next.querySelector(".conversation-link") : document.getElementById("new-chat");
            if (focus && id !== current) {
              focus.focus();
            }
          },
          function (error) {
            say("Could not delete: " + error.message);
          }
        );
      },
      { once: true }
    );
    dialog.showModal();
  }

  function say(text) {
    status.textContent = text;
  }

  function load(reset) {
    if (loading && !reset) {
      return;
    }
    var mine = reset ? ++generation : generation;
    loading = true;
    if (reset) {
      cursor = null;
    }
    var params = new URLSearchParams({ limit: String(PAGE) });
    if (cursor) {
      params.set("cursor", cursor);
    }
    var url = "/api/chat/conversations?";
    if (query) {
      params.set("q", query);
      url = "/api/chat/search?";
    }
    api(url + params.toString()).then(
      function (page) {
        if (mine !== generation) {
          return; // a newer search replaced this one
        }
        loading = false;
        if (reset) {
          list.replaceChildren();
        }
        page.items.forEach(function (summary) {
          if (!list.querySelector('[data-id="' + CSS.escape(summary.id) + '"]')) {
            list.appendChild(item(summary));
          }
        });
        cursor = page.next_cursor;
        loadMore.hidden = !cursor;
        if (!list.children.length) {
          say(query ? "No conversation matches “" + query + "”." : "No conversations yet.");
        } else if (query) {
          say(list.children.length + (cursor ? "+" : "") + " conversations match.");
        } else {
          say("");
        }
      },
      function (error) {
        if (mine === generation) {
          loading = false;
          say("Could not load the conversations: " + error.message);
        }
      }
    );
  }

  function setTitle(id, title) {
    var li = list.querySelector('[data-id="' + CSS.escape(id) + '"]');
    if (li) {
      li.querySelector(".conversation-title").textContent = title;
      li.querySelector("summary").setAttribute("aria-label", "Actions for " + title);
    }
  }

  function setCurrent(id) {
    current = id || "";
    var links = list.querySelectorAll(".conversation-link");
    for (var i = 0; i < links.length; i++) {
      var mine = links[i].parentNode.dataset.id === current;
      if (mine) {
        links[i].setAttribute("aria-current", "page");
      } else {
        links[i].removeAttribute("aria-current");
      }
    }
  }

  // A conversation that just had activity moves to the top (the server's order).
  function upsert(summary) {
    if (query) {
      return;
    }
    var li = list.querySelector('[data-id="' + CSS.escape(summary.id) + '"]');
    if (li) {
      setTitle(summary.id, summary.title);
    } else {
      li = item(summary);
    }
    list.insertBefore(li, list.firstChild);
    say("");
    setCurrent(current);
  }

  function init(options) {
    hooks = options;
    list = document.getElementById("conversation-list");
    status = document.getElementById("sidebar-status");
    loadMore = document.getElementById("load-more");
    search = document.getElementById("chat-search");
    current = options.current || "";
    loadMore.addEventListener("click", function () {
      load(false);
    });
    if ("IntersectionObserver" in window) {
      new IntersectionObserver(function (entries) {
        if (entries[0].isIntersecting && cursor && !loading) {
          load(false);
        }
      }).observe(loadMore);
    }
    var timer = null;
    search.addEventListener("input", function () {
      clearTimeout(timer);
      timer = setTimeout(function () {
        var next = search.value.trim();
        if (next !== query) {
          query = next;
          load(true);
        }
      }, 250);
    });
    load(true);
  }

  window.lumenChatSidebar = {
    init: init,
    setCurrent: setCurrent,
    setTitle: setTitle,
    upsert: upsert,
  };
})();
