// Error mapping as seen by openai-node: a wrong key, an unknown model and a bad parameter type.
// Env: LUMEN_BASE_URL, LUMEN_API_KEY, LUMEN_MODEL. Prints one JSON object keyed by case.
import OpenAI from "openai";

const make = (apiKey) => new OpenAI({ apiKey, baseURL: process.env.LUMEN_BASE_URL, maxRetries: 0 });
const messages = [{ role: "user", content: "hello" }];

async function attempt(call) {
  try {
    await call();
    return { raised: false };
  } catch (error) {
    return {
      raised: true,
      name: error.constructor.name,
      is_api_error: error instanceof OpenAI.APIError,
      status: error.status ?? null,
      code: error.code ?? null,
      type: error.type ?? null,
      message: error.message,
      request_id: error.requestID ?? null,
    };
  }
}

const good = make(process.env.LUMEN_API_KEY);
const result = {
  wrong_key: await attempt(() =>
    make("sk_wrong_key_0000000000000000000000000000").chat.completions.create({
      model: process.env.LUMEN_MODEL,
      messages,
    })),
  unknown_model: await attempt(() =>
    good.chat.completions.create({ model: "no-such-model", messages })),
  bad_parameter: await attempt(() =>
    good.chat.completions.create({ model: process.env.LUMEN_MODEL, messages, max_tokens: "x" })),
};

console.log(JSON.stringify(result));
