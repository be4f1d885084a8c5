"""The vLLM engine (`infer_backend: vllm`, `pip install lf-serve[vllm]`, GPU only).

vLLM's async engine runs on a private event loop in a background thread; requests from any
thread or loop are scheduled onto it. Prompts are token ids built with the LF template (so vLLM
sees exactly the training prompt); a LoRA adapter is served through vLLM's LoRA support instead
of being merged; vLLM applies the stop strings, eos and sampling itself. Images, videos and sounds go
with the prompt as `multi_modal_data`, one model marker per item in the ids (`lf_serve.multimodal`).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from typing import Any

from lf_data.errors import ConfigError
from lf_serve.args import ServePlan
from lf_serve.engine import ChatEngine, Event, GenerationRequest, Sink
from lf_serve.errors import UnsupportedError
from lf_serve.limits import MAX_MEDIA
from lf_serve.model_setup import setup_model

logger = logging.getLogger(__name__)


def engine_arguments(plan: ServePlan, model_path: str, media: tuple[str, ...] = ()) -> dict[str, Any]:
    """The keyword arguments of vLLM's AsyncEngineArgs for this config; `media`: the kinds the model
    takes, each allowed as many items per prompt as a request may bring."""
    infer = plan.infer
    args: dict[str, Any] = {
        "model": model_path,
        "trust_remote_code": plan.model.trust_remote_code,
        "dtype": infer.infer_dtype,
        "max_model_len": infer.vllm_maxlen,
        "gpu_memory_utilization": infer.vllm_gpu_util,
        "enforce_eager": infer.vllm_enforce_eager,
        "tensor_parallel_size": infer.vllm_tensor_parallel_size,
        "disable_log_stats": True,
    }
    if plan.model.adapter_name_or_path:
        args.update(enable_lora=True, max_lora_rank=infer.vllm_max_lora_rank)
    if media:
        from lf_serve.multimodal import VLLM_MODALITY

        args["limit_mm_per_prompt"] = {VLLM_MODALITY[kind]: MAX_MEDIA[kind] for kind in media}
    args.update(infer.vllm_config or {})
    return args


class VllmEngine(ChatEngine):
    def __init__(self, plan: ServePlan) -> None:
        try:
            import vllm
            from vllm.lora.request import LoRARequest
        except ImportError:
            raise ConfigError("infer_backend: vllm needs vLLM on a GPU host: pip install 'lf-serve[vllm]'. "
                              "On CPU use infer_backend: huggingface.") from None
        adapters = plan.model.adapter_name_or_path or []
        if len(adapters) > 1:
            raise ConfigError("vLLM serves one LoRA adapter at a time; merge the others first with "
                              "`lf export` and serve the merged model with the last adapter.")
        if plan.model.quantization_bit is not None:
            raise ConfigError("quantization_bit (bitsandbytes) is for infer_backend: huggingface; vLLM loads "
                              "quantised checkpoints (AWQ, GPTQ, FP8) by itself.")
        if plan.generating.num_beams > 1:
            raise ConfigError("num_beams > 1 is not served by the vLLM engine; use infer_backend: huggingface.")
        self.plan = plan
        self.generating = plan.generating
        self.model_name = plan.model_name()
        setup = setup_model(plan)
        self.tokenizer, self.template, self.tool_format = setup.tokenizer, setup.template, setup.tool_format
        self.eos_ids = setup.eos_ids
        self.max_model_len = plan.infer.vllm_maxlen
        self.media = _media(plan, setup)
        self._vllm = vllm
        self.lora_request = LoRARequest("default", 1, adapters[0]) if adapters else None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="lf-serve-vllm", daemon=True)
        self._thread.start()
        args = vllm.AsyncEngineArgs(**engine_arguments(plan, setup.source.path, tuple(self.markers)))
        self.engine = self._call(self._create(args))

    def _attach_media(self, ids: list[int], refs: dict[str, list[str]]) -> tuple[list[int], Any]:
        """vLLM expands the markers itself: the ids stay as they are, the items go as multi_modal_data."""
        from lf_serve.multimodal import read_for_vllm

        return ids, read_for_vllm(self.media, ids, refs) if self.media is not None else None

    async def _create(self, args: Any) -> Any:
        return self._vllm.AsyncLLMEngine.from_engine_args(args)

    def _call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def close(self) -> None:
        if not self._loop.is_running():
            return
        shutdown = getattr(self.engine, "shutdown", None)
        if callable(shutdown):
            try:
                shutdown()
            except Exception:  # shutting down a half-started engine must not hide the real error
                logger.warning("vLLM engine shutdown failed", exc_info=True)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def sampling_params(self, request: GenerationRequest) -> Any:
        s = request.sampling
        return self._vllm.SamplingParams(
            n=request.n, temperature=s.temperature if s.do_sample else 0.0, top_p=s.top_p if s.do_sample else 1.0,
            top_k=s.top_k if s.do_sample and s.top_k > 0 else -1, repetition_penalty=s.repetition_penalty,
            max_tokens=request.max_new_tokens, stop=list(request.stop) or None, stop_token_ids=sorted(self.eos_ids),
            seed=s.seed, skip_special_tokens=request.skip_special_tokens)

    def _start(self, request: GenerationRequest, sink: Sink) -> None:
        if request.sampling.num_beams > 1:
            raise UnsupportedError("num_beams > 1 is not served by the vLLM engine.", "num_beams")
        asyncio.run_coroutine_threadsafe(self._generate(request, sink), self._loop)

    async def _generate(self, request: GenerationRequest, sink: Sink) -> None:
        request_id = f"lf-{uuid.uuid4().hex}"
        sent = [0] * request.n
        finished = [False] * request.n
        try:
            prompt: dict[str, Any] = {"prompt_token_ids": request.prompt_ids}
            if request.media is not None:
                prompt["multi_modal_data"] = request.media.data
            stream = self.engine.generate(prompt, self.sampling_params(request), request_id,
                                          lora_request=self.lora_request)
            async for output in stream:
                if request.cancelled.is_set():
                    await self.engine.abort(request_id)
                    return
                for completion in output.outputs:
                    i = completion.index
                    if finished[i]:
                        continue
                    text = completion.text[sent[i]:]
                    sent[i] = len(completion.text)
                    finish = completion.finish_reason
                    if finish is not None:
                        finished[i] = True
                        finish = "length" if finish == "length" else "stop"
                    if text or finish is not None:
                        sink(Event(index=i, text=text, finish_reason=finish,
                                   completion_tokens=len(completion.token_ids)))
            for i in range(request.n):
                if not finished[i]:
                    sink(Event(index=i, finish_reason="stop", completion_tokens=0))
        except Exception as err:  # reported to the waiting client
            logger.exception("vLLM generation failed")
            sink(Event(index=0, error=err))


def _media(plan: ServePlan, setup: Any) -> Any:
    """lf_models.media.MediaInputs (markers and limits, no processor: vLLM has its own) when the model's
    family takes media; None for a text model."""
    from transformers import AutoConfig

    from lf_serve.multimodal import family_markers, media_inputs

    try:
        config = AutoConfig.from_pretrained(setup.source.path, trust_remote_code=plan.model.trust_remote_code)
    except (OSError, ValueError) as err:
        raise ConfigError(f"could not read the config of {setup.source.path!r}: {str(err).splitlines()[0]}") from None
    return media_inputs(family_markers(config), setup.tokenizer, plan.model, None, setup.source.path)
