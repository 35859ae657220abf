"""What the person wants, from their own words: one typed request (``RunIntent``).

The builtin policy reads common phrasings ("an unseen cell line", "knockouts we have not
screened", "20 minutes", "no generative models", "hold out B cells") with a small table of
patterns; the LLM policy proposes the same ``RunIntent`` as JSON, which is validated exactly
like the builtin one (files exist, excluded names are in the action space), re-asked with the
reason, and replaced by the builtin reading when it never validates. The same phrase table reads
changes of course said later in the conversation (``read_steer``).
"""

from __future__ import annotations

import glob
import json
import re
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError, field_validator

from harmonycell.agents.messages import Steer
from harmonycell.agents.policies.llm import LLMConfig, ReplyInvalid, ask_validated, build_client, run_sync
from harmonycell.tools.errors import InputError
from harmonycell.tools.record.runfolder import check_h5ad
from harmonycell.tools.search.actions import BACKBONES, PARADIGMS
from harmonycell.tools.tasks.registry import by_cue_priority, hold_out_kind, kinds, task_kind

# words people use for the search's paradigms and backbones (the action grammar's names)
ALIASES: dict[str, str] = {
    **{n: n for n in PARADIGMS}, **{n: n for n in BACKBONES},
    "generative models": "generative", "discriminative models": "discriminative",
    "vae": "cvae", "vaes": "cvae", "variational autoencoder": "cvae", "flow matching": "flow-matching",
    "flows": "flow-matching", "resnets": "resnet", "residual": "resnet", "gated mlp": "gated-mlp",
    "gated": "gated-mlp", "attribute decoder": "attribute-decoder", "set transformer": "set-transformer",
    "transformer": "set-transformer", "transformers": "set-transformer", "pathway": "pathway-masked",
    "pathways": "pathway-masked",
    "simple models": "simple", "closed-form": "simple", "closed form": "simple", "linear": "ridge",
    "linear models": "ridge", "ridge regression": "ridge", "nearest neighbours": "nearest-gene",
    "nearest neighbors": "nearest-gene", "knn": "nearest-gene", "nearest gene": "nearest-gene",
}
# model families a person may name that the action space does not have: refused, not ignored
FOREIGN = r"gnns?|graph neural networks?|diffusion(?: models?)?|gans?|lstms?|rnns?|foundation models?"
NEG = r"(?:no|without|exclude|excluding|skip|not|avoid|don'?t use|do not use|never use|drop|remove)\s+(?:the\s+|any\s+)?"
MODELS = "|".join(sorted((re.escape(a) for a in ALIASES), key=len, reverse=True))
EXCLUDE_RE = re.compile(NEG + rf"({MODELS}|{FOREIGN})(?:\s+models?|\s+backbones?)?\b", re.I)

TIME_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(hours?|hrs?|h|minutes?|mins?|m|seconds?|secs?|s)\b", re.I)
UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0}
NODES_RE = re.compile(r"(\d+|one|two|three|four|five)\s+(?:more\s+)?(?:nodes?|models?|candidates?|tries|trials)\b", re.I)
MORE_RE = re.compile(r"\b(?:add|another|more|extra|\+)\s*(\d+|one|two|three|four|five)?\s*(?:more\s+)?(?:nodes?|models?|tries)?", re.I)
NUMBERS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5}
HOLD_RE = re.compile(r"\b(?:hold(?:ing)?|leave|leaving|keep(?:ing)?)[ -]out\s+(?:the\s+)?(.+?)(?=$|[,.;?!]|\s+(?:and|for|with|in|as|from)\s)", re.I)
DROP_RE = re.compile(r"\b(?:drop|remove|ignore|forget|leave out|without)\s+(?:the\s+)?(?:input|file|dataset)?\s*([\w.\-/*]+)", re.I)
PATHLIKE = re.compile(r"[/*~]|\.h5ad\b", re.I)


class RunIntent(BaseModel):
    """The person's request, typed: what the run will do (unset fields are asked for)."""

    said: str = ""
    files: list[str] = Field(default_factory=list)
    task: str | None = None  # a registered task kind's name
    task_because: str = ""  # the words that decided the task kind
    hold_out: list[str] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=list)
    time_limit_s: float | None = Field(None, gt=0)
    budget_nodes: int | None = Field(None, ge=1)
    by: str = "builtin"  # builtin | llm | builtin (llm fallback)
    ambiguous: list[str] = Field(default_factory=list)  # what could be read more than one way

    @field_validator("task")
    @classmethod
    def _registered(cls, name: str | None) -> str | None:
        return None if name is None else task_kind(name).name

    def missing(self) -> list[str]:
        return [w for w, ok in (("files", bool(self.files)), ("task", self.task is not None)) if not ok]

    def understood(self) -> str:
        """One restatement a person can check."""
        parts = [f"{len(self.files)} input(s): {', '.join(Path(f).name for f in self.files)}" if self.files
                 else "no input files yet"]
        if self.task:
            why = f' (you said "{self.task_because}")' if self.task_because else ""
            parts.append(f"task {self.task}: {task_kind(self.task).description}{why}")
        if self.hold_out:
            parts.append(f"hold out for the test: {', '.join(self.hold_out)}")
        if self.exclude:
            parts.append(f"the search will not try: {', '.join(self.exclude)}")
        if self.time_limit_s:
            parts.append(f"time budget {self.time_limit_s / 60:g} min of training")
        if self.budget_nodes:
            parts.append(f"{self.budget_nodes} node(s)")
        return "; ".join(parts)

    def record(self) -> dict:
        return {**self.model_dump(mode="json"), "understood": self.understood()}


def expand_files(token: str) -> list[Path]:
    """A path, a folder (its .h5ad files) or a glob -> existing .h5ad paths (checked)."""
    p = Path(token).expanduser()
    if any(ch in token for ch in "*?["):
        hits = sorted(Path(h) for h in glob.glob(str(p)))
        if not hits:
            raise InputError("the pattern matches no file", where=token, fix="check the folder and the pattern")
    elif p.is_dir():
        hits = sorted(p.glob("*.h5ad"))
        if not hits:
            raise InputError("no .h5ad file in this folder", where=token, fix="name the files or another folder")
    else:
        hits = [p]
    for h in hits:
        check_h5ad(h)
    return hits


def split_words(text: str) -> tuple[list[str], str]:
    """(path-like tokens, the rest of the sentence)."""
    paths, words = [], []
    for tok in text.split():
        bare = tok.strip(",;\"'")
        is_path = bool(PATHLIKE.search(bare)) or (len(bare) > 2 and Path(bare).expanduser().exists())
        (paths if is_path else words).append(bare if is_path else tok)
    return paths, " ".join(words)


def read_exclusions(text: str) -> list[str]:
    """Action-space names the person rules out; an unknown model family is refused with the choices."""
    out = []
    for m in EXCLUDE_RE.finditer(text):
        word = m.group(1).lower()
        name = ALIASES.get(word) or ALIASES.get(word.rstrip("s"))
        if name is None:
            raise InputError(f"the search has no {word!r} to exclude", where="your request",
                             fix=f"name a paradigm ({', '.join(PARADIGMS)}) or a backbone ({', '.join(BACKBONES)})")
        if name not in out:
            out.append(name)
    return out


def read_time(text: str) -> float | None:
    m = TIME_RE.search(text)
    return float(m.group(1)) * UNIT_S[m.group(2)[0].lower()] if m else None


def read_nodes(text: str) -> int | None:
    m = NODES_RE.search(text)
    if not m:
        return None
    v = m.group(1).lower()
    return NUMBERS.get(v) or int(v)


def read_hold_out(text: str) -> list[str]:
    m = HOLD_RE.search(text)
    if not m:
        return []
    names = re.split(r"\s*(?:,|\band\b|\bor\b)\s*", m.group(1))
    return [n for n in (x.strip() for x in names) if n]


def read_task(text: str) -> tuple[str | None, str, list[str]]:
    """(kind's name, the words that decided it, other kinds the words also fit), by the registered
    kinds' cues, in their priority order (read at each call: a kind registered later is read too)."""
    hits = []
    for kind in by_cue_priority():
        for pat in kind.cues:
            m = re.search(pat, text, re.I)
            if m:
                hits.append((kind.name, m.group(0)))
                break
    if not hits:
        return None, "", []
    kind, because = hits[0]
    others = [k for k, _ in hits[1:] if k != kind]
    return kind, because, others


def read_files(tokens: list[str]) -> list[str]:
    files: list[str] = []
    for tok in tokens:
        files += [str(p) for p in expand_files(tok) if str(p) not in files]
    return files


def builtin_intent(said: str) -> RunIntent:
    paths, words = split_words(said)
    files = read_files(paths)
    kind, because, others = read_task(words)
    for name in (k.name for k in kinds()):  # the kind's own name is plain enough
        if name in words:
            kind, because, others = name, name, []
    hold = read_hold_out(words)
    if hold and kind is None:
        kind, because = hold_out_kind().name, f"hold out {', '.join(hold)}"
    return RunIntent(said=said, files=files, task=kind, task_because=because, hold_out=hold,
                     exclude=read_exclusions(words), time_limit_s=read_time(words),
                     budget_nodes=read_nodes(words), ambiguous=[f"task could also be {o}" for o in others])


def read_steer(said: str, inputs: list[str]) -> Steer | None:
    """A change of course in the person's words, or None when the words are not one."""
    stems = {Path(i).stem.lower(): i for i in inputs}
    drops = []
    for m in DROP_RE.finditer(said):
        word = m.group(1).lower().removesuffix(".h5ad")
        hit = [i for s, i in stems.items() if word and (s == word or s.startswith(word))]
        drops += [Path(h).stem for h in hit if Path(h).stem not in drops]
    rest = DROP_RE.sub(" ", said) if drops else said
    add = 0
    more = MORE_RE.search(rest)
    if more and re.search(r"\b(?:add|more|another|extra)\b", rest, re.I):
        add = NUMBERS.get((more.group(1) or "one").lower()) or int(more.group(1))
    steer = Steer(said=said, exclude=read_exclusions(rest), time_limit_s=read_time(rest), add_nodes=add,
                  drop_inputs=drops, hold_out=read_hold_out(rest))
    changed = steer.exclude or steer.time_limit_s or steer.add_nodes or steer.drop_inputs or steer.hold_out
    return steer if changed else None


# --- the LLM policy --------------------------------------------------------------------------

SYSTEM = ("You turn a biologist's request about single-cell perturbation data into one JSON object. "
          "Reply with the JSON object only.")


def prompt(said: str, files: list[str]) -> str:
    schema = {k: v for k, v in RunIntent.model_json_schema()["properties"].items()
              if k not in {"said", "by", "files"}}
    return (f"The person wrote:\n{said}\n\nInput files found in their words: {json.dumps(files)}\n\n"
            f"Task kinds: {json.dumps({k.name: k.description for k in kinds()})}\n"
            f"Search paradigms: {list(PARADIGMS)}; backbones: {list(BACKBONES)} (only these may be excluded)\n"
            f"Reply with a JSON object with these fields (null or [] when not said): {json.dumps(schema)}\n"
            "task_because quotes the person's words that decide the task; ambiguous lists what you could not decide.")


def parse_reply(reply: str, said: str, files: list[str]) -> RunIntent:
    """A validated RunIntent from the model's reply, or ``ReplyInvalid`` saying why not."""
    text = reply[reply.find("{"): reply.rfind("}") + 1]
    try:
        data = json.loads(text)
        intent = RunIntent.model_validate({**data, "said": said, "files": files, "by": "llm"})
    except (json.JSONDecodeError, ValidationError) as e:
        raise ReplyInvalid(f"not a valid request object: {str(e).splitlines()[0]}") from None
    except InputError as e:  # a task kind that is not registered
        raise ReplyInvalid(f"not a valid request object: {e.one_line()}") from None
    unknown = [x for x in intent.exclude if x not in PARADIGMS and x not in BACKBONES]
    if unknown:
        raise ReplyInvalid(f"exclude names {unknown} are not in the action space {list(PARADIGMS) + list(BACKBONES)}")
    return intent


def llm_intent(said: str, llm: LLMConfig) -> tuple[RunIntent, dict]:
    """The LLM's reading of ``said`` (files are always read by the builtin policy), and the call's record."""
    files = read_files(split_words(said)[0])
    outcome = run_sync(ask_validated(build_client(llm), SYSTEM, prompt(said, files),
                                     lambda r: parse_reply(r, said, files), max_asks=llm.max_asks,
                                     retries=llm.transport_retries,
                                     reask="Fix it and reply again with the complete JSON object."))
    call = {"model": llm.model, "attempts": outcome.attempts, "rejected": outcome.reasons, "error": outcome.error,
            "replies": outcome.replies}
    if outcome.value is None:
        call["outcome"] = "fell back to builtin"
        return builtin_intent(said).model_copy(update={"by": "builtin (llm fallback)"}), call
    call["outcome"] = "accepted"
    return outcome.value, call


def read_intent(said: str, llm: LLMConfig | None = None) -> tuple[RunIntent, dict | None]:
    """The person's request, typed (builtin, or LLM with builtin fallback); a bad path raises."""
    return llm_intent(said, llm) if llm is not None else (builtin_intent(said), None)
