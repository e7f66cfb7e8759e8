/**
 * Chat templates: a model's Jinja template (tokenizer_config.json `chat_template`, or
 * `chat_template.jinja`, or `serve --chat-template <file>`) turns OpenAI chat messages into the
 * prompt text, as transformers' `apply_chat_template(messages, tokenize=False)` does
 * (transformers `utils/chat_template_utils.py`, and the chat templating docs):
 *
 * - rendered with `@huggingface/jinja` (the library transformers.js uses), whose parser applies
 *   `trim_blocks` and `lstrip_blocks` as transformers' Jinja environment does;
 * - the variables are `messages`, `add_generation_prompt`, the tokenizer's special tokens as
 *   strings (`bos_token`, `eos_token`, `unk_token`, `pad_token`, ... from tokenizer_config.json;
 *   AddedToken objects give their `content`), the library's `raise_exception` and `strftime_now`, plus the
 *   request's `chat_template_kwargs` (e.g. Qwen3's `enable_thinking`);
 * - `continue_final_message` cuts the rendered text right after the last message's content, so
 *   the model continues it instead of starting a new turn (transformers' rule, including its
 *   handling of content whose trailing whitespace the template trimmed);
 * - message content given as text parts (`[{"type": "text", "text": ...}]`) is joined with '\n'
 *   into a string for templates that read `content` as a string, and passed as the list to
 *   templates that loop over it (vLLM's `chat_template_content_format: auto`).
 *
 * The rendered prompt already holds the template's special tokens, so it is tokenized without
 * adding any (transformers and vLLM: `add_special_tokens=False` for chat).
 */
import fs from 'node:fs';
import { Template } from '@huggingface/jinja';
import { ApiError, Errors } from './errors.js';

/** One text part of a message's content. */
export interface TextPart {
  type: 'text';
  text: string;
}

/** A chat message as the template receives it (the request's, content normalised). */
export interface ChatMessage {
  role: string;
  content: string | TextPart[] | null;
  name?: string;
  tool_call_id?: string;
  tool_calls?: unknown[];
  [key: string]: unknown;
}

/** Options of {@link ChatTemplate.render}. */
export interface RenderOptions {
  /** Append the assistant turn's header (default true for requests, as vLLM). */
  addGenerationPrompt: boolean;
  /** End the prompt inside the final (assistant) message so the model continues it. */
  continueFinalMessage?: boolean;
  /** Extra template variables (`chat_template_kwargs`). */
  kwargs?: Record<string, unknown>;
  /** Tools, passed through to templates that describe them (`tools`). */
  tools?: unknown[] | null;
}

/** tokenizer_config.json keys whose values are special tokens (transformers' SPECIAL_TOKENS_ATTRIBUTES). */
const SPECIAL_TOKEN_KEYS = ['bos_token', 'eos_token', 'unk_token', 'sep_token', 'pad_token', 'cls_token', 'mask_token'] as const;

/** A special token's string: a plain string, or an AddedToken object's `content`; null otherwise. */
function tokenString(value: unknown): string | null {
  if (typeof value === 'string') return value;
  if (value && typeof value === 'object' && typeof (value as { content?: unknown }).content === 'string') return (value as { content: string }).content;
  return null;
}

/** The BOS and EOS strings the tokenizer resolved (TextTokenizer.bosToken / eosToken; null: none). */
export interface TokenizerSpecialTokens {
  bosToken: string | null;
  eosToken: string | null;
}

/**
 * The special tokens a template sees (as transformers' `special_tokens_map`; unset ones stay
 * undefined in the template): `bos_token` and `eos_token` as the tokenizer resolved them when
 * `resolved` is given (models/tokenizer: tokenizer_config.json under the family's rules, with
 * config.json's ids when the config names none), else from the tokenizer config; the other
 * keys of {@link SPECIAL_TOKEN_KEYS} that are set in the config, and `additional_special_tokens`
 * as a list of strings.
 */
export function specialTokensOf(tokenizerConfig: Record<string, unknown>, resolved?: TokenizerSpecialTokens): Record<string, string | string[]> {
  const tokens: Record<string, string | string[]> = {};
  for (const key of SPECIAL_TOKEN_KEYS) {
    const s = tokenString(tokenizerConfig[key]);
    if (s !== null) tokens[key] = s;
  }
  if (resolved) {
    for (const [key, value] of [['bos_token', resolved.bosToken], ['eos_token', resolved.eosToken]] as const) {
      if (value === null) delete tokens[key];
      else tokens[key] = value;
    }
  }
  const extra = tokenizerConfig.additional_special_tokens;
  if (Array.isArray(extra)) tokens.additional_special_tokens = extra.map(tokenString).filter((s): s is string => s !== null);
  return tokens;
}

/**
 * The template source of a tokenizer config's `chat_template`: a string, or transformers' list
 * of named templates (`[{"name": "default", "template": ...}, ...]`, the one named 'default').
 * @returns null when the config has none
 */
export function templateSourceOf(tokenizerConfig: Record<string, unknown>): string | null {
  const t = tokenizerConfig.chat_template;
  if (typeof t === 'string') return t;
  if (Array.isArray(t)) {
    const named = t.find((x) => x && typeof x === 'object' && (x as { name?: unknown }).name === 'default') as { template?: unknown } | undefined;
    if (named && typeof named.template === 'string') return named.template;
  }
  return null;
}

/** A parsed chat template with the special tokens of its tokenizer. */
export class ChatTemplate {
  private readonly template: Template | null = null;
  /** Why the source does not parse (then every render is a 400 saying so), or null. */
  readonly parseError: string | null = null;
  /** Whether the template iterates over a message's content (takes content as a list of parts). */
  readonly takesContentParts: boolean;

  /**
   * @param source the Jinja source
   * @param specialTokens from {@link specialTokensOf}
   * @param origin where the template came from, for messages (a file, or "<model>'s tokenizer config")
   */
  constructor(
    readonly source: string,
    private readonly specialTokens: Record<string, string | string[]>,
    readonly origin: string,
  ) {
    try {
      this.template = new Template(source);
    } catch (err) {
      this.parseError = `the chat template of ${origin} does not parse: ${(err as Error).message}`;
    }
    // vLLM's content-format detection, in short: a loop over `message.content` / `message['content']`.
    this.takesContentParts = /\{%-?\s*for\s+\w+\s+in\s+\w+(?:\.content|\[\s*['"]content['"]\s*\])\s*-?%\}/.test(source);
  }

  /**
   * Reads a template file (`--chat-template <file>`).
   * @throws Error with a one-line message naming the file when it is missing, unreadable or does not parse
   */
  static fromFile(file: string, specialTokens: Record<string, string | string[]>): ChatTemplate {
    let source: string;
    try {
      source = fs.readFileSync(file, 'utf8');
    } catch (err) {
      throw new Error(`--chat-template ${file}: cannot read it (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
    }
    const template = new ChatTemplate(source, specialTokens, file);
    if (template.parseError) throw new Error(`--chat-template ${file}: ${template.parseError}`);
    return template;
  }

  /**
   * The template a served model answers chat with: `override` (`--chat-template`), else the
   * model's own (tokenizer config `chat_template` / chat_template.jinja), else `inherited` (a
   * sliced variant's dense parent: same tokenizer); null when there is none.
   * @param tokenizerConfig the model's tokenizer config fields (ModelInfo.tokenizerConfig)
   * @param resolved the tokenizer's own BOS/EOS strings (ModelInfo.bosToken / eosToken), which win
   *   over the config's entries; absent: the config's
   */
  static forModel(
    id: string,
    tokenizerConfig: Record<string, unknown>,
    override: { source: string; file: string } | null,
    inherited: ChatTemplate | null,
    resolved?: TokenizerSpecialTokens,
  ): ChatTemplate | null {
    const tokens = specialTokensOf(tokenizerConfig, resolved);
    if (override) return new ChatTemplate(override.source, tokens, override.file);
    const own = templateSourceOf(tokenizerConfig);
    if (own !== null) return new ChatTemplate(own, tokens, `${id}'s tokenizer config`);
    return inherited;
  }

  /**
   * The prompt text of `messages`.
   * @throws ApiError 400 when the template does not parse, raises (its message is passed on, e.g.
   *   "Conversation roles must alternate"), fails on the messages, or `continueFinalMessage` finds
   *   no final message text in the output
   */
  render(messages: readonly ChatMessage[], options: RenderOptions): string {
    if (this.template === null) throw Errors.invalid(`${this.parseError}; start the server with --chat-template <file>.`, 'messages', 'chat_template_error');
    const prepared = messages.map((m) => (this.takesContentParts ? m : { ...m, content: joinTextParts(m.content) }));
    let text: string;
    try {
      text = this.template.render({
        ...this.specialTokens,
        ...(options.kwargs ?? {}),
        messages: prepared,
        add_generation_prompt: options.addGenerationPrompt,
        ...(options.tools ? { tools: options.tools } : {}),
      });
    } catch (err) {
      // The template's own raise_exception("...") lands here too, with its message.
      throw Errors.invalid(`The chat template of ${this.origin} failed on these messages: ${(err as Error).message}`, 'messages', 'chat_template_error');
    }
    return options.continueFinalMessage ? cutAfterFinalMessage(text, messages) : text;
  }
}

/** Content as a string: text parts joined with '\n' (vLLM's 'string' content format); null stays null. */
function joinTextParts(content: ChatMessage['content']): string | null {
  if (content === null || typeof content === 'string') return content;
  return content.map((p) => p.text).join('\n');
}

/**
 * transformers' `continue_final_message`: the text up to the end of the final message's
 * content (its last text part for list content). When the template trimmed the content's
 * trailing whitespace, the cut is after the stripped content.
 * @throws ApiError 400 when the final message has no text or its text is not in the output
 */
export function cutAfterFinalMessage(rendered: string, messages: readonly ChatMessage[]): string {
  const last = messages.at(-1)?.content;
  const final = typeof last === 'string' ? last : Array.isArray(last) ? [...last].reverse().find((p) => typeof p.text === 'string')?.text : undefined;
  if (final === undefined) throw Errors.invalid('continue_final_message is set but the final message has no text to continue.', 'messages');
  const stripped = final.trim();
  const at = rendered.lastIndexOf(stripped);
  if (at < 0) {
    throw Errors.invalid('continue_final_message is set but the final message does not appear in the prompt the chat template renders.', 'messages');
  }
  // transformers compares the slice of the left-stripped length with the unstripped content:
  // equal only when the content had no leading whitespace and the template kept the trailing.
  const keptLength = final.trimStart().length;
  return rendered.slice(at, at + keptLength) === final ? rendered.slice(0, at + keptLength) : rendered.slice(0, at + stripped.length);
}

/** The 400 of a chat request to a model without a chat template. */
export function noChatTemplate(model: string): ApiError {
  return Errors.invalid(
    `Model '${model}' has no chat template (no "chat_template" in its tokenizer_config.json and no chat_template.jinja), so it cannot answer chat requests; ` +
      'start the server with --chat-template <file> (a Jinja template), or send the text as "prompt" to POST /v1/completions.',
    'messages',
    'chat_template_missing',
  );
}
