// The seed's "Node.js — streaming" example, parameterised by LUMEN_BASE_URL, LUMEN_API_KEY and
// LUMEN_MODEL (LUMEN_PROMPT: the message; LUMEN_INCLUDE_USAGE=1: ask for usage). Instead of writing
// the text to stdout it collects it, then prints one JSON object including finalChatCompletion().
import OpenAI from "openai";

const client = new OpenAI({
  apiKey: process.env.LUMEN_API_KEY,
  baseURL: process.env.LUMEN_BASE_URL,
  maxRetries: 0,
});

const params = {
  model: process.env.LUMEN_MODEL,
  messages: [{ role: "user", content: process.env.LUMEN_PROMPT ?? "Write a haiku about machine learning" }],
};
if (process.env.LUMEN_INCLUDE_USAGE === "1") {
  params.stream_options = { include_usage: true };
}

const stream = await client.chat.completions.stream(params);

let text = "";
const chunks = [];
for await (const chunk of stream) {
  text += chunk.choices[0]?.delta?.content ?? "";
  chunks.push({
    choices: chunk.choices.length,
    finish_reason: chunk.choices[0]?.finish_reason ?? null,
    usage: chunk.usage ?? null,
  });
}

const final = await stream.finalChatCompletion();

console.log(JSON.stringify({
  text,
  chunks,
  final: {
    content: final.choices[0].message.content,
    role: final.choices[0].message.role,
    finish_reason: final.choices[0].finish_reason,
    model: final.model,
    usage: final.usage ?? null,
  },
}));
