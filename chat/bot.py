"""The chat bot: one reply to one prompt, streamed into the job's output log, never without an answer.

`chat_bot_reply` is the service the `chat_bot_interaction` job calls. A transient provider failure
with attempts left raises TransientJobError (the job's backoff, or the provider's Retry-After when
longer); with no key, an open breaker, a permanent (4xx) failure or the last attempt failing, the
reply is a fallback message and the job completes with `usedFallback: true`.

With a conversation, its recent messages (within CHAT_CONTEXT_TOKEN_BUDGET) are the context, and the
prompt and the model's reply are saved under ids derived from the job, so a retried job never saves
twice. A fallback reply is not saved: it is not the model's answer and would pollute later context.

The reply is a coroutine (the job's `async def run`): the provider's stream (`chat.llm`, AsyncOpenAI) and
the output log (`queues.output`, redis.asyncio, text coalesced) are awaited on the worker's event loop;
database work goes through `context.run_db` (the runtime's bounded pool). Only the current attempt
records anything: the saved messages and the audit events are written in one transaction that first
locks the job record and checks that this attempt is still the running one (`job_attempt_guard`).

Per tenant (the job's guild, else its user): a tenant over its daily quota (chat.quotas) gets the fallback
`quota_exceeded` without a call; every call first waits for the shared provider budget (chat.budget; the
wait shows in the job's progress and spends no attempt), then settles it with the real usage, applies the
provider's rate-limit headers, and charges the tenant's quota.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
import weakref
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction

from audit.services import audit_event_record, audit_events_batched
from chat.breaker import abreaker_allow, abreaker_record_failure, abreaker_record_success, abreaker_release_probe
from chat.budget import (
    BudgetWaitTooLong,
    budget_backoff,
    budget_observe,
    budget_settle,
    budget_tokens_estimate,
    budget_wait,
)
from chat.llm import Completion, LLMError, estimate_tokens, llm_configured, llm_stream_completion
from chat.metrics import CHAT_FALLBACKS, LLM_TOKENS
from chat.models import MAX_CONTENT_LENGTH, Conversation, MessageRole, PersonalityMode
from chat.quotas import aquota_charge, aquota_check, quota_limit, quota_limits
from chat.selectors import (
    ConversationNotFound,
    conversation_get_for_owner,
    message_list_recent,
    message_list_recent_many,
    uuid_or_none,
)
from chat.services import UNSET, message_save_many, message_save_together
from queues.constants import JobStatus
from queues.context import JobContext
from queues.definitions import JobCancelled, PermanentJobError, TransientJobError
from queues.models import JobRecord
from queues.output import AsyncOutputWriter, output_writer_aopen
from queues.redis_batch import get_async_batched_connection
from queues.services import job_attempt_guard

logger = logging.getLogger(__name__)

DEFAULT_PERSONALITY = PersonalityMode.HELPFUL
SYSTEM_PROMPTS: dict[str, str] = {
    PersonalityMode.HELPFUL: "You are Slimy, a friendly and helpful assistant. Answer clearly and concisely.",
    PersonalityMode.CREATIVE: "You are Slimy, an imaginative assistant. Be playful and original, yet useful.",
    PersonalityMode.PROFESSIONAL: "You are Slimy, a precise, professional assistant. Be accurate and formal.",
    PersonalityMode.CASUAL: "You are Slimy, a laid-back assistant. Keep it short, relaxed and conversational.",
}
FALLBACK_REPLIES = {
    "not_configured": "Sorry, I can't answer right now: no language model is configured for this service.",
    "breaker_open": "Sorry, my language model is having trouble right now. Please try again in a minute.",
    "provider_error": "Sorry, I couldn't reach my language model after several tries. Please try again later.",
    "provider_rejected": "Sorry, my language model could not process this request. Try rephrasing it.",
    "empty_reply": "Sorry, I couldn't come up with an answer to that. Try rephrasing your question.",
    "quota_exceeded": "Sorry, this server has used up its replies for today. Please try again tomorrow.",
}
# While tokens stream in, cancellation is checked (one primary-key query) every quarter second or
# every 16 chunks, whichever comes first: a fast stream stops within 16 chunks, a slow one within 0.25 s.
CANCEL_CHECK_INTERVAL = 0.25
CANCEL_CHECK_CHUNKS = 16
# Longest a reply waits for the provider budget; the job's timeout (120 s) normally fires first.
BUDGET_MAX_WAIT = 300
# A finished reply waits this long for others to record their side effects in the same transaction.
RECORD_BATCH_DELAY = 0.005
RECORD_BATCH_MAX = 200
# Message ids of the assistant's replies are derived from the job id in this namespace.
REPLY_NAMESPACE = uuid.UUID("6c1f6f1e-5d8e-4f0b-9d55-1b7a6c0a2b3e")


@dataclass(frozen=True)
class ChatRequest:
    prompt: str
    owner_id: int | None
    guild_id: str = ""
    conversation_id: str | None = None
    personality_mode: str | None = None
    tenant: str = ""  # who the reply's tokens count against (chat.quotas); "" = nobody


def reply_job_id(job_id) -> uuid.UUID:
    """The job id under which the assistant's reply of this job is saved (the prompt uses the job's own)."""
    return uuid.uuid5(REPLY_NAMESPACE, str(job_id))


async def chat_bot_reply(*, request: ChatRequest, context: JobContext) -> dict:
    conversation, mode, messages, daily_limit = await _db_batch(_prompts).call(context, (request, context))
    writer = await output_writer_aopen(job_id=context.job_id, job_type=context.job_type, attempt=context.attempt)
    try:
        completion, fallback_reason = await _complete(request, messages, writer, context, daily_limit)
    finally:
        await writer.close()

    usage = {"promptTokens": 0, "completionTokens": 0}
    if completion is not None:  # the provider answered (possibly with nothing usable)
        LLM_TOKENS.labels("prompt").inc(completion.prompt_tokens)
        LLM_TOKENS.labels("completion").inc(completion.completion_tokens)
        usage = {"promptTokens": completion.prompt_tokens, "completionTokens": completion.completion_tokens}
    if fallback_reason:
        CHAT_FALLBACKS.labels(fallback_reason).inc()
        reply, model = FALLBACK_REPLIES[fallback_reason], completion.model if completion else ""
    else:
        assert completion is not None  # no fallback reason: the provider answered
        reply, model = completion.text, completion.model

    result = {"reply": reply, "usedFallback": bool(fallback_reason), "model": model, "usage": usage}
    if fallback_reason:
        result["fallbackReason"] = fallback_reason
    details = {
        **_prompt_facts(request),
        "replyLength": len(reply),
        "usedFallback": bool(fallback_reason),
        "fallbackReason": fallback_reason or None,
        "model": model,
        "usage": usage,
        "personalityMode": mode,
    }
    if conversation is not None:
        result["conversationId"] = str(conversation.pk)
    saved = await _db_batch(_record_replies).call(
        context, (request, context, mode, None if fallback_reason else reply, conversation is not None, details)
    )
    if saved is False:
        result["conversationSaved"] = False
    return result


class _DbBatch:
    """One per event loop and database function: calls that come together make ONE trip to the pool.

    A call waits RECORD_BATCH_DELAY for others (at most RECORD_BATCH_MAX), then `fn(items)` runs once on
    the database pool for all of them and answers each in order, with its own result or its own exception.
    Used for the reply's two database trips: loading its prompt (`_prompts`) and recording its side effects
    (`_record_replies`): a thousand replies starting or ending within a few milliseconds cost a few dozen
    statements, not several each.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, fn):
        self.loop = loop
        self.fn = fn
        self.pending: list[tuple[tuple, asyncio.Future, JobContext]] = []
        self.timer: asyncio.TimerHandle | None = None

    async def call(self, context: JobContext, args: tuple):
        future = self.loop.create_future()
        self.pending.append((args, future, context))
        if len(self.pending) >= RECORD_BATCH_MAX:
            self._flush()
        elif self.timer is None:
            self.timer = self.loop.call_later(RECORD_BATCH_DELAY, self._flush)
        return await future

    def _flush(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        batch, self.pending = self.pending, []
        if batch:
            self.loop.create_task(self._run(batch))

    async def _run(self, batch: list[tuple[tuple, asyncio.Future, JobContext]]) -> None:
        try:
            # Every reply's run_db is the same runtime pool; the first's carries the trip.
            answers = await batch[0][2].run_db(self.fn, [args for args, _, _ in batch])
        except BaseException as exc:
            for _, future, _ in batch:
                if not future.done():  # a reply cancelled meanwhile no longer waits
                    future.set_exception(exc)
            if isinstance(exc, Exception):
                return
            raise
        for (_, future, _), answer in zip(batch, answers, strict=True):
            if future.done():
                continue
            if isinstance(answer, BaseException):
                future.set_exception(answer)
            else:
                future.set_result(answer)


_batches: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict] = weakref.WeakKeyDictionary()


def _db_batch(fn) -> _DbBatch:
    loop = asyncio.get_running_loop()
    per_loop = _batches.setdefault(loop, {})
    batch = per_loop.get(fn)
    if batch is None:
        batch = per_loop[fn] = _DbBatch(loop, fn)
    return batch


def _together_or_each(items: list[tuple], together, each, what: str) -> list:
    """`together(items)` when there are several, else (or when that fails) `each(*item)` for every item:
    per item its answer or its exception."""
    if len(items) > 1:
        try:
            return together(items)
        except Exception:  # each then on its own, which answers (or raises) for itself
            logger.info("%s: %s together failed; each on its own", what, len(items), exc_info=True)
    answers: list = []
    for item in items:
        try:
            answers.append(each(*item))
        except Exception as exc:  # noqa: BLE001 - the item's own outcome
            answers.append(exc)
    return answers


def _record_replies(items: list[tuple]) -> list:
    """`_record_reply` for each item, together when there are several: per item its answer or its exception."""
    return _together_or_each(items, _record_together, _record_reply, "recording replies")


def _record_together(items: list[tuple]) -> list:
    """What `_record_reply` does for each item, in one transaction: one statement locks every current
    attempt's record (a reply whose attempt is not current gets JobCancelled and writes nothing), the
    messages are saved together (`message_save_together`), one query finds every actor, one statement
    stages every audit event. A second reply of a conversation already in the batch is recorded after it,
    on its own (its messages come after the first's, as when each recorded alone)."""
    answers: list = [None] * len(items)
    alone: list[int] = []
    with transaction.atomic(), audit_events_batched():
        ids = [str(context.job_id) for _, context, *_ in items]
        current = {
            (str(pk), attempts)
            for pk, attempts in JobRecord.objects.select_for_update()
            .filter(pk__in=ids, status=JobStatus.STARTED)
            .order_by("pk")
            .values_list("pk", "attempts")
        }
        live, savers, conversations = [], [], set()
        for index, (request, context, _mode, _reply, has_conversation, _details) in enumerate(items):
            if (str(context.job_id), context.attempt) not in current:
                answers[index] = JobCancelled(str(context.job_id))
                continue
            if has_conversation:
                if request.conversation_id in conversations:
                    alone.append(index)
                    continue
                conversations.add(request.conversation_id)
                savers.append(index)
            live.append(index)
        owners = {items[i][0].owner_id for i in live if items[i][0].owner_id}
        actors = {user.pk: user for user in get_user_model().objects.filter(pk__in=owners)} if owners else {}
        saved = message_save_together(
            [_message_rows(*items[i][:4]) for i in savers],
            actors=actors,
        )
        for index, answer in zip(savers, saved, strict=True):
            answers[index] = answer
            if not answer:
                request = items[index][0]
                logger.warning("conversation %s was deleted during the reply; not saved", request.conversation_id)
        for index in live:
            request, context, _mode, _reply, _has, details = items[index]
            _audit(request, context, action="chat_bot_interaction", details=details, actor=actors.get(request.owner_id))
    for index in alone:
        try:
            answers[index] = _record_reply(*items[index])
        except Exception as exc:  # noqa: BLE001 - the reply's own outcome
            answers[index] = exc
    return answers


def _record_reply(
    request: ChatRequest, context: JobContext, mode: str, reply: str | None, has_conversation: bool, details: dict
) -> bool | None:
    """The reply's side effects, all or nothing, and only while this attempt is the current one."""
    # Its audit events (the saved messages', the reply's) are staged in one statement at the end.
    with transaction.atomic(), audit_events_batched():
        job_attempt_guard(job_id=context.job_id, attempt=context.attempt)  # raises JobCancelled otherwise
        saved = _save(request, context, mode, reply) if has_conversation else None
        _audit(request, context, action="chat_bot_interaction", details=details)
    return saved


def _prompts(items: list[tuple]) -> list:
    """`_prompt` for each (request, context), together when there are several: per item its answer or its
    exception (a missing conversation's PermanentJobError)."""
    return _together_or_each(items, _prompts_together, _prompt, "loading prompts")


def _prompts_together(items: list[tuple]) -> list:
    """What `_prompt` reads for each item, in three queries for all: the conversations, their recent
    messages (`message_list_recent_many`), the tenants' daily limits."""
    wanted = {
        pk for pk in (uuid_or_none(request.conversation_id) for request, _ in items if request.conversation_id) if pk
    }
    conversations = {c.pk: c for c in Conversation.objects.filter(pk__in=wanted)} if wanted else {}
    recent = message_list_recent_many(conversation_ids=list(conversations), limit=settings.CHAT_CONTEXT_MAX_MESSAGES)
    limits = quota_limits(tenants={request.tenant for request, _ in items if request.tenant})
    answers: list = []
    for request, context in items:
        conversation = None
        if request.conversation_id:
            pk = uuid_or_none(request.conversation_id)
            conversation = conversations.get(pk) if pk is not None else None
            if conversation is None or request.owner_id is None or conversation.owner_id != request.owner_id:
                answers.append(_conversation_not_found())
                continue
        mode = (
            request.personality_mode or (conversation.personality_mode if conversation else "") or DEFAULT_PERSONALITY
        )
        messages = chat_messages_build(
            request=request,
            mode=mode,
            context_job_id=context.job_id,
            recent=recent.get(conversation.pk, []) if conversation is not None else None,
        )
        answers.append((conversation, mode, messages, limits[request.tenant] if request.tenant else None))
    return answers


def _conversation_not_found() -> PermanentJobError:
    return PermanentJobError("The conversation does not exist or is not yours.", code="conversation_not_found")


def _prompt(request: ChatRequest, context: JobContext):
    """(conversation or None, personality mode, messages for the model, the tenant's daily token limit):
    one trip to the database pool."""
    conversation = _conversation(request)
    mode = request.personality_mode or (conversation.personality_mode if conversation else "") or DEFAULT_PERSONALITY
    messages = chat_messages_build(request=request, mode=mode, context_job_id=context.job_id)
    return conversation, mode, messages, quota_limit(tenant=request.tenant) if request.tenant else None


def _conversation(request: ChatRequest):
    if not request.conversation_id:
        return None
    try:
        return conversation_get_for_owner(
            conversation_id=request.conversation_id, owner_id=request.owner_id, counted=False
        )
    except ConversationNotFound as exc:
        raise _conversation_not_found() from exc


def chat_messages_build(*, request: ChatRequest, mode: str, context_job_id=None, recent=None) -> list[dict]:
    """System prompt, the conversation's recent messages within the token budget, then the prompt.
    `recent`: the conversation's last CHAT_CONTEXT_MAX_MESSAGES messages, oldest first, if read already."""
    system = SYSTEM_PROMPTS.get(mode, SYSTEM_PROMPTS[DEFAULT_PERSONALITY])
    if request.guild_id:
        system += f" You are chatting in the Discord server {request.guild_id}."
    history: list[dict] = []
    if request.conversation_id:
        own = {str(context_job_id), str(reply_job_id(context_job_id))} if context_job_id else set()
        budget = settings.CHAT_CONTEXT_TOKEN_BUDGET
        if recent is None:
            recent = message_list_recent(
                conversation_id=request.conversation_id, limit=settings.CHAT_CONTEXT_MAX_MESSAGES
            )
        for message in reversed(recent):  # newest first until the budget is spent
            if message.job_id is not None and str(message.job_id) in own:
                continue  # written by an earlier attempt of this very job
            cost = estimate_tokens(message.content) + 4  # + the per-message overhead of the chat format
            if cost > budget:
                break
            budget -= cost
            history.append({"role": message.role, "content": message.content})
        history.reverse()
    return [{"role": "system", "content": system}, *history, {"role": "user", "content": request.prompt}]


async def _complete(
    request, messages, writer: AsyncOutputWriter, context: JobContext, limit: int | None
) -> tuple[Completion | None, str]:
    """(completion or None, fallback reason or ""). Raises TransientJobError to retry, or JobCancelled."""
    if not llm_configured():
        return await _fallback(writer, "not_configured")
    redis = get_async_batched_connection()
    estimated = budget_tokens_estimate(prompt_chars=sum(len(m["content"]) for m in messages))
    quota = await aquota_check(tenant=request.tenant, tokens=estimated, conn=redis, limit=limit)
    if not quota.allowed:
        # Checked before the breaker: a tenant over quota never takes the half-open probe.
        await context.run_db(
            _audit_guarded,
            request,
            context,
            action="chat_bot_quota_exceeded",
            success=False,
            error_message="daily token quota exceeded",
            details={
                **_prompt_facts(request),
                "tenant": request.tenant,
                "used": quota.used,
                "limit": quota.limit,
                "estimatedTokens": estimated,
            },
        )
        return await _fallback(writer, "quota_exceeded")
    if not await abreaker_allow(conn=redis):
        return await _fallback(writer, "breaker_open")
    verdict = False  # whether this call told the breaker how the provider is doing
    try:
        await context.acheck_cancelled()
        await _budget_wait(estimated, context, redis)
        last_check, unchecked = time.monotonic(), 0

        async def on_delta(text: str) -> None:
            nonlocal last_check, unchecked
            writer.write(text)
            if context.superseded is not None:
                context.check_cancelled()  # the runtime's fence watcher keeps this flag: no query
                return
            unchecked += 1
            if unchecked >= CANCEL_CHECK_CHUNKS or time.monotonic() - last_check >= CANCEL_CHECK_INTERVAL:
                last_check, unchecked = time.monotonic(), 0
                await context.acheck_cancelled()

        try:
            completion = await llm_stream_completion(messages=messages, on_delta=on_delta)
        except LLMError as exc:
            await budget_observe(headers=exc.headers, conn=redis)
            if exc.status == 429:
                # A 429 got through anyway: every worker holds its next call (never less than a second).
                await budget_backoff(seconds=max(exc.retry_after or 0.0, 1.0), conn=redis)
            opened = await abreaker_record_failure(conn=redis) if exc.transient else False
            verdict = exc.transient
            retrying = exc.transient and context.attempt < context.max_attempts
            logger.warning(
                "LLM attempt %s of %s failed: %s (%s)%s",
                context.attempt,
                context.max_attempts,
                exc,
                exc.code,
                "; breaker opened" if opened else "",
            )
            await context.run_db(
                _audit_guarded,
                request,
                context,
                action="chat_bot_error",
                success=False,
                error_message=str(exc),
                details={
                    **_prompt_facts(request),
                    "code": exc.code,
                    "status": exc.status,
                    "transient": exc.transient,
                    "retrying": retrying,
                    "breakerOpened": opened,
                },
            )
            if retrying:
                raise TransientJobError(str(exc), code=exc.code, retry_after=exc.retry_after) from exc
            return await _fallback(writer, "provider_error" if exc.transient else "provider_rejected")
        await abreaker_record_success(conn=redis)
        verdict = True
        actual = completion.prompt_tokens + completion.completion_tokens
        await budget_settle(estimated=estimated, actual=actual, conn=redis)
        await budget_observe(headers=completion.headers, conn=redis)
        await aquota_charge(tenant=request.tenant, tokens=actual, conn=redis)
    finally:
        if not verdict:
            # Cancelled, a 4xx, a timeout or a Redis error: no verdict on the provider, so a half-open
            # probe must not keep its lock (every reply would fall back until it expired).
            await abreaker_release_probe(conn=redis)
    if not completion.text.strip():
        return completion, (await _fallback(writer, "empty_reply"))[1]
    return completion, ""


async def _budget_wait(tokens: int, context: JobContext, redis) -> None:
    """Wait for the shared provider budget; the wait shows in the job's progress and is no attempt."""
    waited = 0.0

    async def on_wait(seconds: float) -> None:
        await context.run_db(context.set_progress, {"waitingFor": "provider_budget", "seconds": round(seconds, 3)})

    try:
        waited = await budget_wait(tokens=tokens, on_wait=on_wait, max_wait=BUDGET_MAX_WAIT, conn=redis)
    except BudgetWaitTooLong as exc:
        raise TransientJobError(str(exc), code="llm_budget_exhausted", retry_after=exc.seconds) from exc
    if waited:
        await context.run_db(context.set_progress, {"waitingFor": None, "budgetWaitedSeconds": round(waited, 3)})


async def _fallback(writer: AsyncOutputWriter, reason: str) -> tuple[None, str]:
    # Watchers of the output log see the fallback as a part of its own, after any partial reply.
    await writer.start_segment(label="fallback")
    writer.write(FALLBACK_REPLIES[reason])
    return None, reason


def _message_rows(request: ChatRequest, context: JobContext, mode: str, reply: str | None):
    """(conversation id, owner id, messages, personality mode) of a reply to save: the prompt, then the reply."""
    messages: list[tuple[str, str, object]] = [(MessageRole.USER, request.prompt, context.job_id)]
    if reply:
        messages.append((MessageRole.ASSISTANT, reply[:MAX_CONTENT_LENGTH], reply_job_id(context.job_id)))
    return request.conversation_id, request.owner_id, messages, mode


def _save(request: ChatRequest, context: JobContext, mode: str, reply: str | None) -> bool:
    """Save the prompt and the reply; False when the conversation was deleted while the model answered."""
    conversation_id, owner_id, messages, mode = _message_rows(request, context, mode, reply)
    try:
        message_save_many(conversation_id=conversation_id, owner_id=owner_id, messages=messages, personality_mode=mode)
    except ConversationNotFound:
        # The user still gets the answer; there is just nowhere left to keep it.
        logger.warning("conversation %s was deleted during the reply; not saved", request.conversation_id)
        return False
    return True


def _prompt_facts(request: ChatRequest) -> dict:
    return {
        "promptLength": len(request.prompt),
        "promptSha256": hashlib.sha256(request.prompt.encode()).hexdigest(),
        "conversationId": request.conversation_id,
        "guildId": request.guild_id or None,
    }


def _audit_guarded(request: ChatRequest, context: JobContext, **kwargs) -> None:
    with transaction.atomic():
        job_attempt_guard(job_id=context.job_id, attempt=context.attempt)
        _audit(request, context, **kwargs)


def _audit(
    request: ChatRequest,
    context: JobContext,
    *,
    action: str,
    details: dict,
    success: bool = True,
    error_message: str = "",
    actor=UNSET,
) -> None:
    # audit_event_record never raises: an event that cannot be recorded never fails the reply.
    if actor is UNSET:
        actor = get_user_model().objects.filter(pk=request.owner_id).first() if request.owner_id else None
    audit_event_record(
        action=action,
        resource_type="chat_job",
        resource_id=str(context.job_id),
        actor=actor,
        details={**details, "attempt": context.attempt, "jobId": str(context.job_id)},
        success=success,
        error_message=error_message,
        request_id=context.request_id or None,
    )
