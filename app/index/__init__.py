"""The search projection: memories' vectors and words kept in the API process, fed by the
change log Postgres writes, and the one entry point retrieval asks for candidates.

``candidates``  the ``CandidateSource`` contract, and its Postgres implementation
``memory_index`` the in-process index (``MemoryIndex``): lifecycle, catch-up, search
``state``       everything it holds, in one object (snapshot, compaction, applying changes)
``cursor``      where it stands in the change log (holes, late rows)
``slots``       which memory each slot holds, and what filters read per slot
``vectors``     FAISS (the one module importing it), and which device copy the settings call for
``device``      the device copy: an exact torch scan on a GPU or the CPU, fed incrementally,
                filters as masks, micro-batched (imports nothing of the web or database stack)
``lexical``     BM25 over text and context
``snapshot``    the on-disk format, written whole and swapped in
``saved``       what each part keeps in a snapshot (arrays and JSON, no pickle), checked on load
``maintenance`` change-log pruning
"""
