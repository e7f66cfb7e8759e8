/**
 * vLLM's `POST /tokenize` and `POST /detokenize`, answered by the model's worker (which owns
 * the tokenizer):
 * - `/tokenize` `{"model", "prompt", "add_special_tokens": true, "return_token_strs": false}`, or
 *   with `"messages"` instead of `"prompt"` the chat prompt the template renders
 *   (`add_generation_prompt` true, `continue_final_message`, `add_special_tokens` false,
 *   `chat_template_kwargs`), answers `{"count", "max_model_len", "tokens", "token_strs"}`
 *   (`token_strs`: the vocabulary strings when asked, else null);
 * - `/detokenize` `{"model", "tokens"}` answers `{"prompt"}`, special tokens kept.
 * `model` may be left out when every served model shares one tokenizer (one dense model and its
 * sliced variants).
 */
import type { Request, Response } from 'express';
import { z } from 'zod';
import { TokenizerRequestError } from '../engine/model-worker.js';
import { checkMessages, checkTemplateOptions, messageSchema, renderChatPrompt } from './chat-protocol.js';
import { noChatTemplate } from './chat-template.js';
import type { CompletionsContext } from './completions.js';
import { ApiError, Errors } from './errors.js';
import { type ServedModel, lookupModel } from './models.js';
import { parseWith } from './protocol.js';

const common = {
  model: z.string().min(1).nullish(),
  return_token_strs: z.boolean().nullish(),
  add_special_tokens: z.boolean().nullish(),
};

const completionTokenize = z.object({ ...common, prompt: z.string() });
const chatTokenize = z.object({
  ...common,
  messages: z.array(messageSchema).min(1, 'must hold at least one message'),
  add_generation_prompt: z.boolean().nullish(),
  continue_final_message: z.boolean().nullish(),
  chat_template_kwargs: z.record(z.string(), z.unknown()).nullish(),
});
const detokenizeSchema = z.object({ model: common.model, tokens: z.array(z.number().int()) });

/** `/tokenize` answer. */
export interface TokenizeResponse {
  count: number;
  max_model_len: number;
  tokens: number[];
  token_strs: (string | null)[] | null;
}

/**
 * The model a tokenizer request names, or the one tokenizer every served model shares.
 * @throws ApiError 400 when `model` is left out and the served models have different roots; 404/503 as {@link lookupModel}
 */
function modelFor(ctx: CompletionsContext, id: string | null | undefined): ServedModel {
  if (id) return lookupModel(ctx.models, ctx.pending, id);
  const models = ctx.models.list();
  const roots = new Set(models.map((m) => m.parent ?? m.id));
  if (models.length === 0 || roots.size > 1) {
    throw Errors.invalid(`"model" is required: the served models (${models.map((m) => m.id).join(', ') || 'none yet'}) do not share one tokenizer.`, 'model');
  }
  return models.find((m) => m.parent === null) ?? models[0];
}

/** An engine-side tokenizer error as an API error. */
function apiError(err: unknown): unknown {
  return err instanceof TokenizerRequestError ? ApiError.fromEngine(err.info) : err;
}

/** Builds the express handler of `POST /tokenize`. */
export function tokenizeHandler(ctx: CompletionsContext) {
  return async (req: Request, res: Response): Promise<void> => {
    const body = req.body as Record<string, unknown> | undefined;
    const isChat = typeof body === 'object' && body !== null && 'messages' in body;
    let text: string;
    let addSpecialTokens: boolean;
    let model: ServedModel;
    let wantStrs: boolean;
    if (isChat) {
      const params = parseWith(chatTokenize, body);
      checkMessages(params.messages);
      checkTemplateOptions(params);
      model = modelFor(ctx, params.model);
      if (!model.chatTemplate) throw noChatTemplate(model.id);
      text = renderChatPrompt(params, model.chatTemplate);
      addSpecialTokens = params.add_special_tokens ?? false;
      wantStrs = params.return_token_strs ?? false;
    } else {
      const params = parseWith(completionTokenize, body);
      model = modelFor(ctx, params.model);
      text = params.prompt;
      addSpecialTokens = params.add_special_tokens ?? true;
      wantStrs = params.return_token_strs ?? false;
    }
    try {
      const { tokens, tokenStrs } = await model.worker.tokenize(text, addSpecialTokens);
      const answer: TokenizeResponse = { count: tokens.length, max_model_len: model.info.maxContext, tokens, token_strs: wantStrs ? tokenStrs : null };
      res.json(answer);
    } catch (err) {
      throw apiError(err);
    }
  };
}

/** Builds the express handler of `POST /detokenize`. */
export function detokenizeHandler(ctx: CompletionsContext) {
  return async (req: Request, res: Response): Promise<void> => {
    const params = parseWith(detokenizeSchema, req.body);
    const model = modelFor(ctx, params.model);
    try {
      res.json({ prompt: await model.worker.detokenize(params.tokens) });
    } catch (err) {
      throw apiError(err);
    }
  };
}
