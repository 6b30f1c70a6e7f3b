"""A run: load the model, open the output directory, list the catalog's shard and skip its finished tracks, then
hand the rest to the loop (``service.offline.backfill.loop``); the summary is what it did."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import deque

from service.artefacts.manifest import ModelFileError
from service.artefacts.registry import LoadedModel, load_models
from service.offline.backfill.cache_warming import CacheWarmer
from service.offline.backfill.catalog import catalog, select_shard
from service.offline.backfill.loop import RunLoop
from service.offline.backfill.options import Options, Summary
from service.offline.backfill.output import OutputDir, RunIdentity
from service.offline.codes import UsageError

log = logging.getLogger("taggram.backfill")


class Backfill:
    """One run of ``taggram backfill``: set up (model, output directory, catalog shard, what is left to do), then
    the loop (``service.offline.backfill.loop``); ``stop_signal`` set by a signal handler stops it after a commit."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.stop_signal: int | None = None
        self.summary = Summary(options.shard_index, options.shard_count)

    # -- set-up --------------------------------------------------------------------------------------------------
    def _load_model(self) -> LoadedModel:
        o = self.options
        settings = o.settings.model_copy(update={"models": [o.model]})
        try:
            model = load_models(settings)[o.model]
        except (ModelFileError, RuntimeError) as error:
            raise UsageError(f"cannot load model {o.model!r}: {error}") from None
        return model

    def _identity(self, model: LoadedModel, hop_frames: int) -> RunIdentity:
        o = self.options
        manifest, taxonomy = model.manifest, model.taxonomy
        mapping = json.dumps(taxonomy.as_dict(manifest.labels), sort_keys=True).encode()
        return RunIdentity(
            model=manifest.name,
            onnx_sha256=manifest.onnx.sha256,
            labels=tuple(manifest.labels),
            embedding_dim=manifest.embedding_dim,
            hop_samples=hop_frames * manifest.frame_hop,
            top_k=o.top_k,
            taggram=o.taggram,
            taxonomy_name=taxonomy.name,
            taxonomy_sha256=hashlib.sha256(mapping).hexdigest(),
            max_seconds=o.settings.max_audio_seconds,
            min_seconds=o.settings.min_audio_seconds,
            max_bytes=o.settings.max_upload_bytes,
            damaged_audio=o.settings.damaged_audio,
            segment_embeddings=o.segment_embeddings,
            precision=model.runner.precision,
        )

    # -- main loop -----------------------------------------------------------------------------------------------
    def run(self) -> Summary:
        o = self.options
        started = time.monotonic()
        model = self._load_model()
        hop_frames = model.manifest.geometry.hop_frames(o.hop_seconds)
        identity = self._identity(model, hop_frames)
        output = OutputDir(o.out, identity, o.shard_index, o.shard_count)
        output.open()
        warmer = None
        try:
            warmer = CacheWarmer(o.settings) if o.warm_cache else None
            tracks = select_shard(catalog(o.source), o.shard_index, o.shard_count)
            done = output.finished_ids()
            todo = deque(t for t in tracks if t.track_id not in done)
            self.summary.tracks_in_shard = len(tracks)
            self.summary.already_done = len(tracks) - len(todo)
            log.info(
                "shard %d/%d: %d tracks, %d already finished, %d to analyse with %s (%s, %s)",
                o.shard_index,
                o.shard_count,
                len(tracks),
                self.summary.already_done,
                len(todo),
                model.name,
                model.runner.provider,
                model.runner.precision,
            )
            loop = RunLoop(
                o, self.summary, lambda: self.stop_signal, model, hop_frames, identity, output, warmer, todo, started
            )
            loop.run()
        finally:
            if warmer is not None:
                warmer.close()
            output.close()
        self.summary.wall_seconds = time.monotonic() - started
        return self.summary
