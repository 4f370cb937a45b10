// The chat page's model picker (with each model's price and capabilities, remembered between
// visits), the acknowledgement of a model's notice, and the per-conversation settings form.
// chat.js owns the page's state and hands it over through init().
(function () {
  "use strict";

  var MODEL_KEY = "lumen-chat-model";
  var el;
  var state;
  var render;
  var api;
  var json;
  var conversationUrl;
  var announce;
  var composerError;

  function init(chat) {
    el = chat.el;
    state = chat.state;
    render = chat.render;
    api = chat.api;
    json = chat.json;
    conversationUrl = chat.conversationUrl;
    announce = chat.announce;
    composerError = chat.composerError;
  }


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

  // Selects the model chosen on the last visit (if it is still offered) and shows the selection.
  function restoreModel() {
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
  }

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

  window.lumenChatSettings = {
    init: init,
    modelName: modelName,
    takesImages: takesImages,
    needsAck: needsAck,
    showModel: showModel,
    selectModel: selectModel,
    restoreModel: restoreModel,
    onModelChange: onModelChange,
    acknowledge: acknowledge,
    saveSettings: saveSettings,
  };
})();
