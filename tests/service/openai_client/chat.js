// node chat.js BASE_URL MODEL
// Drives qwen-serve's OpenAI-compatible API with the official `openai` package, as a user's
// program would: a plain and a streamed chat, a required tool call (whole and streamed),
// json_schema output, n = 2,
// logprobs and two errors. Prints one JSON object of what it saw; exits 1 with the error on
// stderr when a call fails unexpectedly.
'use strict';
const OpenAI = require('openai');

const [base, model] = process.argv.slice(2);
const client = new OpenAI({
  baseURL: `${base}/v1`,
  apiKey: process.env.QWEN_TOKEN || 'unused',
  maxRetries: 0,
  timeout: 120000,
});
const hello = [{ role: 'user', content: 'Hello, who are you?' }];
const noThinking = { enable_thinking: false };

(async () => {
  const out = {};

  const plain = await client.chat.completions.create({
    model, messages: hello, max_tokens: 8, temperature: 0, chat_template_kwargs: noThinking,
  });
  out.plain = {
    object: plain.object,
    role: plain.choices[0].message.role,
    content: plain.choices[0].message.content,
    finish_reason: plain.choices[0].finish_reason,
    usage: plain.usage,
  };

  const stream = await client.chat.completions.create({
    model, messages: hello, max_tokens: 8, temperature: 0, chat_template_kwargs: noThinking,
    stream: true, stream_options: { include_usage: true },
  });
  let content = '';
  let finish = null;
  let usage = null;
  let chunks = 0;
  for await (const chunk of stream) {
    ++chunks;
    if (chunk.usage) usage = chunk.usage;
    for (const c of chunk.choices) {
      if (c.delta && c.delta.content) content += c.delta.content;
      if (c.finish_reason) finish = c.finish_reason;
    }
  }
  out.stream = { content, finish_reason: finish, usage, chunks };

  const tools = [{
    type: 'function',
    function: {
      name: 'get_weather',
      description: 'The weather of a city',
      parameters: {
        type: 'object',
        properties: {
          city: { type: 'string', maxLength: 12 },
          days: { type: 'integer', minimum: 1, maximum: 7 },
        },
        required: ['city', 'days'],
      },
    },
  }];
  out.tool = null;
  out.streamed_tool = null;
  for (let seed = 1; seed <= 10 && !out.tool; ++seed) {
    const request = {
      model, messages: [{ role: 'user', content: 'What is the weather in Paris?' }], tools,
      tool_choice: 'required', seed, max_tokens: 200, chat_template_kwargs: noThinking,
    };
    const r = await client.chat.completions.create(request);
    const c = r.choices[0];
    if (c.finish_reason !== 'tool_calls') continue;
    const call = c.message.tool_calls[0];
    out.tool = {
      finish_reason: c.finish_reason, id: call.id, type: call.type, name: call.function.name,
      arguments_text: call.function.arguments, arguments: JSON.parse(call.function.arguments),
    };
    // The same request streamed: the SDK assembles the call from its argument chunks.
    const s = client.chat.completions.stream(request);
    const fragments = [];
    s.on('tool_calls.function.arguments.delta', (e) => {
      if (e.arguments_delta) fragments.push(e.arguments_delta);
    });
    const whole = await s.finalChatCompletion();
    const sc = whole.choices[0];
    const scall = sc.message.tool_calls[0];
    out.streamed_tool = {
      finish_reason: sc.finish_reason, calls: sc.message.tool_calls.length, id: scall.id,
      type: scall.type, name: scall.function.name, arguments_text: scall.function.arguments,
      fragments,
    };
  }

  const schema = {
    type: 'object',
    properties: {
      name: { type: 'string', maxLength: 8 },
      score: { type: 'integer', minimum: 0, maximum: 10 },
    },
    required: ['name', 'score'],
    additionalProperties: false,
  };
  out.json = null;
  for (let seed = 1; seed <= 10 && !out.json; ++seed) {
    const r = await client.chat.completions.create({
      model, messages: [{ role: 'user', content: 'Describe a player as JSON.' }], seed,
      max_tokens: 200, chat_template_kwargs: noThinking,
      response_format: { type: 'json_schema', json_schema: { name: 'player', schema, strict: true } },
    });
    if (r.choices[0].finish_reason !== 'stop') continue;
    out.json = JSON.parse(r.choices[0].message.content);
  }

  const two = await client.chat.completions.create({
    model, messages: hello, max_tokens: 4, n: 2, seed: 7, chat_template_kwargs: noThinking,
  });
  out.n = { choices: two.choices.map((c) => c.index), usage: two.usage };

  const lp = await client.chat.completions.create({
    model, messages: hello, max_tokens: 4, temperature: 0, logprobs: true, top_logprobs: 2,
    chat_template_kwargs: noThinking,
  });
  out.logprobs = lp.choices[0].logprobs.content.map((t) => ({
    token: t.token, logprob: t.logprob, top: t.top_logprobs.length,
  }));

  out.errors = {};
  for (const [name, body] of [
    ['model', { model: 'no-such-model', messages: hello }],
    ['temperature', { model, messages: hello, temperature: 5 }],
  ]) {
    try {
      await client.chat.completions.create(body);
      out.errors[name] = { status: 200 };
    } catch (e) {
      out.errors[name] = { status: e.status, param: e.param, code: e.code, type: e.type,
                           kind: e.constructor.name };
    }
  }
  const models = await client.models.list();
  out.models = models.data.map((m) => m.id);

  process.stdout.write(JSON.stringify(out) + '\n');
  process.exit(0);
})().catch((e) => {
  process.stderr.write(`chat.js: ${e && e.stack ? e.stack : e}\n`);
  process.exit(1);
});
