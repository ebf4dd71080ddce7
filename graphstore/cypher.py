"""Every Cypher text the store runs, shared by both backends.

Values only ever travel as parameters ($rows, $uids, ...). Labels, relationship types and key properties
are written out literally here and checked against ``graphstore.schema`` by the test suite, so the text stays
readable and the schema stays the one source of truth. The backends refuse any text not in ``ALL``
(a runtime guard against queries assembled from values).

Portable subset (infra.md): MERGE on business keys, epoch-ms integers, no APOC / CALL subqueries / SHOW.
"""

from __future__ import annotations

from graphstore.schema import KEYS, Label, Rel

# --- writes ---------------------------------------------------------------------------------------
UPSERT_LLMS = """
UNWIND $rows AS row
MERGE (m:LLM {llm_id: row.llm_id})
WITH m, row
WHERE m.updated_ms IS NULL OR row.ts >= m.updated_ms
SET m.description = row.description, m.price_in = row.price_in, m.price_out = row.price_out,
    m.emb = row.emb, m.updated_ms = row.ts
"""

# A turn is written in four steps so each node is MERGEd once per batch, not once per row (MERGE is the cost):
# the batch's distinct users, LLMs and queries first, then one row per turn. Edges are CREATEd only with a
# turn that has none yet: a new turn records the id of the write that created it (`created_by`, a fresh
# $write_id per query), and only that same atomic query creates its edges, so a stored turn has all of them
# and a replay (another write id) adds nothing. This costs no extra update per row, unlike the `linked` flag
# it replaced (set false on create, true after the edges). A Response may already exist (feedback came
# first): keep its rating, fill in only what is missing.
UPSERT_USERS = """
UNWIND $rows AS row
MERGE (u:User {user_id: row.user_id})
SET u.first_ms = CASE WHEN u.first_ms IS NULL OR row.first_ms < u.first_ms THEN row.first_ms ELSE u.first_ms END,
    u.last_ms = CASE WHEN u.last_ms IS NULL OR row.last_ms > u.last_ms THEN row.last_ms ELSE u.last_ms END
"""
MERGE_LLMS = """
UNWIND $rows AS row
MERGE (m:LLM {llm_id: row.llm_id})
"""
UPSERT_QUERIES = """
UNWIND $rows AS row
MERGE (q:Query {query_key: row.query_key})
ON CREATE SET q.text = row.text, q.emb = row.emb
"""
# The turn step also links FOLLOWS for the turns it created, both ways, so whichever of two consecutive turns
# arrives second makes the edge (order-tolerant); MERGE because both may be new in the same batch. MERGE (like
# every clause) completes for all rows before the next clause runs, so the FOLLOWS match sees the whole
# batch's new turns. Neighbours are found by `position` (conversation id '#' turn index, indexed): two index
# seeks per turn, whatever the conversation's length (matching on conversation_id read all of its turns).
# The id and index both end up in the text, so positions of different conversations never collide.
UPSERT_TURNS = """
UNWIND $rows AS row
MERGE (t:Turn {turn_id: row.turn_id})
ON CREATE SET t.created_by = $write_id, t.user_id = row.user_id, t.conversation_id = row.conversation_id,
    t.turn_index = row.turn_index, t.ts = row.ts, t.llm_id = row.llm_id, t.query_key = row.query_key,
    t.position = row.conversation_id + '#' + toString(row.turn_index)
MERGE (r:Response {response_id: row.turn_id})
ON CREATE SET r.text = row.response, r.emb = row.response_emb
ON MATCH SET r.text = coalesce(r.text, row.response), r.emb = coalesce(r.emb, row.response_emb)
WITH row, t, r
WHERE t.created_by = $write_id
MATCH (u:User {user_id: row.user_id})
MATCH (m:LLM {llm_id: row.llm_id})
MATCH (q:Query {query_key: row.query_key})
CREATE (t)-[:BY]->(u), (m)-[:ANSWERED]->(t), (q)-[:ASKED_IN]->(t), (r)-[:ANSWER_OF]->(t)
WITH row, t
UNWIND [row.conversation_id + '#' + toString(row.turn_index - 1),
        row.conversation_id + '#' + toString(row.turn_index + 1)] AS near
MATCH (o:Turn {position: near})
WHERE o.user_id = row.user_id
FOREACH (x IN CASE WHEN o.turn_index < t.turn_index THEN [1] ELSE [] END | MERGE (t)-[:FOLLOWS]->(o))
FOREACH (x IN CASE WHEN o.turn_index > t.turn_index THEN [1] ELSE [] END | MERGE (o)-[:FOLLOWS]->(t))
"""

# Turns stored before `position` existed get it here (ensure_schema), so new turns find them as neighbours.
BACKFILL_TURN_POSITIONS = """
MATCH (t:Turn)
WHERE t.position IS NULL
SET t.position = t.conversation_id + '#' + toString(t.turn_index)
"""

# Feedback is kept by its event id. It rates Response nodes keyed by turn ids, MERGEd here, so feedback that
# arrives before its turn is attached at once and the turn finds its rating when it comes. The latest
# feedback (by timestamp, then event id) sets the response's rating; first-seen values win on replay.
UPSERT_FEEDBACK = """
UNWIND $rows AS row
MERGE (f:Feedback {feedback_id: row.feedback_id})
ON CREATE SET f.user_id = row.user_id, f.turn_id = row.turn_id, f.ts = row.ts, f.rating = row.rating,
    f.kind = row.kind, f.signal = row.signal, f.rejected_turn_id = row.rejected_turn_id
WITH f, row
UNWIND row.targets AS target
MERGE (r:Response {response_id: target.response_id})
MERGE (f)-[e:RATES]->(r)
ON CREATE SET e.rating = target.rating
WITH f, e, r
WHERE r.rating_ms IS NULL OR f.ts > r.rating_ms OR (f.ts = r.rating_ms AND f.feedback_id >= r.rating_by)
SET r.rating = e.rating, r.rating_ms = f.ts, r.rating_by = f.feedback_id
"""

# One query per batch of decisions. Like turns, a decision's edges are CREATEd once, in the same atomic query
# that creates it (`created_by` = this query's $write_id), so a re-recorded decision (a redelivered request)
# adds nothing. Users and LLMs are MERGEd: a cold-start user has no node until its first decision or turn.
UPSERT_DECISIONS = """
UNWIND $rows AS row
MERGE (d:Decision {request_id: row.request_id})
ON CREATE SET d.created_by = $write_id, d.user_id = row.user_id, d.chosen_llm_id = row.chosen_llm_id,
    d.scores = row.scores, d.model_version = row.model_version, d.scorer = row.scorer, d.explain = row.explain,
    d.turn_ids = row.turn_ids,
    d.latency_ms = row.latency_ms, d.fallback = row.fallback, d.error = row.error, d.ts = row.ts
WITH d, row
WHERE d.created_by = $write_id
FOREACH (uid IN CASE WHEN row.user_id IS NULL THEN [] ELSE [row.user_id] END |
    MERGE (u:User {user_id: uid})
    CREATE (d)-[:FOR]->(u))
FOREACH (mid IN CASE WHEN row.chosen_llm_id IS NULL THEN [] ELSE [row.chosen_llm_id] END |
    MERGE (m:LLM {llm_id: mid})
    CREATE (d)-[:CHOSE]->(m))
WITH d, row
UNWIND row.turn_ids AS tid
MATCH (t:Turn {turn_id: tid})
CREATE (d)-[:USED]->(t)
"""

# A fact about the graph, set by the first writer that claims it and returned to every later one (which compares):
# the embedding space of the query vectors the ingest and the routers store (GraphStore.claim_embedding_space).
CLAIM_META = """
MERGE (m:Meta {key: $key})
ON CREATE SET m.value = $value
RETURN m.value
"""
# Some stored query texts with their vectors: what a process checks against its own encoder before it claims the
# embedding space of a graph that holds vectors but no claim (written before claims were recorded).
QUERY_SAMPLE = """
MATCH (q:Query)
WHERE q.emb IS NOT NULL
RETURN q.text, q.emb
LIMIT $n
"""

# --- reads ----------------------------------------------------------------------------------------
PING = "RETURN 1"  # a round trip that reads nothing

LLM_CATALOG = """
MATCH (m:LLM)
WHERE m.description IS NOT NULL
RETURN m.llm_id, m.description, m.price_in, m.price_out, m.emb
"""

# The hot path: the last $k turns of each user in $uids (newest first here; the client flips the order).
# `WITH uid, u` makes FalkorDB seek the user by index and expand, instead of scanning all turns.
# Only keys and scalars come back: the query embedding is immutable and read by query_key (QUERY_EMBS) only
# when the client's cache lacks it, so a warm read moves ~100 bytes per turn instead of ~2 KB.
_TURN_FILTER = """
WHERE ($conversation_id IS NULL OR t.conversation_id = $conversation_id) AND ($before_ms IS NULL OR t.ts < $before_ms)
"""
_LAST_K_TURNS = """
UNWIND $uids AS uid
MATCH (u:User {user_id: uid})
WITH uid, u
MATCH (u)<-[:BY]-(t:Turn)""" + _TURN_FILTER + """WITH uid, t
ORDER BY t.ts DESC, t.turn_id DESC
WITH uid, collect(t)[0..$k] AS turns
UNWIND turns AS t
"""
# The same for one user ($uid): a plain ORDER BY ... LIMIT, a little cheaper than collecting per user.
_LAST_K_TURNS_ONE = """
MATCH (u:User {user_id: $uid})
WITH u
MATCH (u)<-[:BY]-(t:Turn)""" + _TURN_FILTER + """WITH $uid AS uid, t
ORDER BY t.ts DESC, t.turn_id DESC
LIMIT $k
"""
_TURN_COLUMNS = """OPTIONAL MATCH (r:Response)-[:ANSWER_OF]->(t)
RETURN uid, t.turn_id, t.conversation_id, t.llm_id, t.query_key, t.turn_index, t.ts, r.rating, r.rating_ms
"""
# With each turn's query embedding as a last column, for when the client's cache has not been serving whole
# reads (GraphStore._user_rows picks): one round trip instead of two.
_TURN_COLUMNS_EMB = """OPTIONAL MATCH (r:Response)-[:ANSWER_OF]->(t)
OPTIONAL MATCH (q:Query)-[:ASKED_IN]->(t)
RETURN uid, t.turn_id, t.conversation_id, t.llm_id, t.query_key, t.turn_index, t.ts, r.rating, r.rating_ms, q.emb
"""
USER_TURNS = _LAST_K_TURNS + _TURN_COLUMNS
USER_TURNS_EMB = _LAST_K_TURNS + _TURN_COLUMNS_EMB
USER_TURNS_ONE = _LAST_K_TURNS_ONE + _TURN_COLUMNS
USER_TURNS_ONE_EMB = _LAST_K_TURNS_ONE + _TURN_COLUMNS_EMB

# What serving reads before each comparison from a bound on, per user ($bounds: [{uid, since}]): the turns from
# ``since`` on, and the newest $k before ``since``. With the counts as known from ``since`` on
# (USER_RATED_SINCE_AND_KEPT), the live watch and the promotion judge see what a router serving
# each comparison read without reading every stored turn of a long history (GraphStore.serving_samples).
_BOUNDED = """
UNWIND $bounds AS b
MATCH (u:User {user_id: b.uid})
WITH b.uid AS uid, b.since AS since, u
MATCH (u)<-[:BY]-(t:Turn)
"""
_TURNS_SINCE = _BOUNDED + """WHERE t.ts >= since
WITH uid, t
"""
_TURNS_BEFORE = _BOUNDED + """WHERE t.ts < since
WITH uid, t
ORDER BY t.ts DESC, t.turn_id DESC
WITH uid, collect(t)[0..$k] AS turns
UNWIND turns AS t
"""
TURNS_SINCE = _TURNS_SINCE + _TURN_COLUMNS
TURNS_SINCE_EMB = _TURNS_SINCE + _TURN_COLUMNS_EMB
TURNS_BEFORE = _TURNS_BEFORE + _TURN_COLUMNS
TURNS_BEFORE_EMB = _TURNS_BEFORE + _TURN_COLUMNS_EMB

# What a training sample reads (GraphStore.sample_training): first each user's comparisons with at least $min_llms
# distinct LLMs rated that start at or after $since (the possible targets), one row each, without their turns:
# conversation, turn index, query key, `position` and the time of its first answer, with the time of the user's first
# turn (of all their turns); a user with none gives no row. From them the client draws the cut and picks the
# targets, then reads the newest $k turns before the cut (TURNS_BEFORE) and the turns at the targets' positions
# ($groups: [{uid, pos}], deduplicated by the client).
USER_COMPARISONS = """
UNWIND $uids AS uid
MATCH (u:User {user_id: uid})
WITH uid, u
MATCH (u)<-[:BY]-(t:Turn)
OPTIONAL MATCH (r:Response)-[:ANSWER_OF]->(t)
WITH uid, t.conversation_id AS conv, t.turn_index AS idx, t.query_key AS qkey, t.position AS pos, min(t.ts) AS start,
     collect(DISTINCT CASE WHEN r.rating IS NOT NULL THEN t.llm_id END) AS rated
WITH uid, min(start) AS first, collect(CASE WHEN size(rated) >= $min_llms AND start >= $since
                                     THEN [conv, idx, qkey, pos, start] END) AS cs
UNWIND cs AS c
RETURN uid, first, c[0], c[1], c[2], c[3], c[4]
"""
_TURNS_AT = """
UNWIND $groups AS g
WITH g.uid AS uid, g.pos AS pos
MATCH (t:Turn {position: pos})
WHERE t.user_id = uid
WITH uid, t
"""
TURNS_AT = _TURNS_AT + _TURN_COLUMNS
TURNS_AT_EMB = _TURNS_AT + _TURN_COLUMNS_EMB

# The pairwise (wins, games) of every rated comparison (graphstore.counts' rules: the rated answers of one
# conversation turn of a user; each answer plays every other once, a win if rated higher, half on a tie) are kept
# per (user, LLM) on a WIN_COUNT edge, so a router reads a row per LLM however long the user's past (USER_WIN_COUNTS).
# The writes keep them: after turns or ratings are stored, RECOUNT_COMPARISONS recounts the given comparisons
# ($groups: [{uid, pos}], each once; pos is the turns' `position`, TURN_POSITIONS finds a rated turn's) from their
# rated answers as stored. Each answer keeps its own share (pair_wins, pair_games) and the change of each share is
# added to its (user, LLM) edge. It reads state, not events, so running it again changes nothing (a replayed batch,
# a crash between a write and its recount) and the order in which turns and ratings arrive does not matter.
# - Setting the user's counts_rev first takes the user's write lock on Neo4j, so two writers cannot both read a
#   share before either adds its change.
# - The client dedupes the groups: FalkorDB does not seek the position index after a WITH DISTINCT. `WITH uid, pos,
#   t` makes it seek the turns by position and expand to their answers, instead of scanning every Response.
RECOUNT_COMPARISONS = """
UNWIND $groups AS g
MATCH (u:User {user_id: g.uid})
SET u.counts_rev = coalesce(u.counts_rev, 0) + 1
WITH g.uid AS uid, g.pos AS pos
MATCH (t:Turn {position: pos})
WHERE t.user_id = uid
WITH uid, pos, t
MATCH (t)<-[:ANSWER_OF]-(r:Response)
WHERE r.rating IS NOT NULL
WITH uid, pos, collect(r) AS rs, collect(t.llm_id) AS llms, collect(r.rating) AS ratings
UNWIND range(0, size(rs) - 1) AS x
WITH uid, rs[x] AS r, llms[x] AS llm, size(rs) - 1 AS games,
     reduce(w = 0.0, y IN range(0, size(rs) - 1) | w + CASE WHEN y = x THEN 0.0 WHEN ratings[x] > ratings[y] THEN 1.0
                                                        WHEN ratings[x] = ratings[y] THEN 0.5 ELSE 0.0 END) AS wins
WITH uid, llm, r, wins, games, wins - coalesce(r.pair_wins, 0.0) AS dw, games - coalesce(r.pair_games, 0) AS dg
SET r.pair_wins = wins, r.pair_games = games
WITH uid, llm, sum(dw) AS dw, sum(dg) AS dg
WHERE dw <> 0.0 OR dg <> 0
MATCH (u:User {user_id: uid})
MATCH (m:LLM {llm_id: llm})
MERGE (u)-[k:WIN_COUNT]->(m)
ON CREATE SET k.wins = 0.0, k.games = 0
SET k.wins = k.wins + dw, k.games = k.games + dg
"""
# The comparisons of each user in $uids with a rated answer that no recount has seen (pair_games unset): graphs
# written before the counts were kept, or by a loader that bypasses the writes (GraphStore.recount_win_counts).
UNCOUNTED_COMPARISONS = """
UNWIND $uids AS uid
MATCH (u:User {user_id: uid})
WITH uid, u
MATCH (u)<-[:BY]-(t:Turn)<-[:ANSWER_OF]-(r:Response)
WHERE r.rating IS NOT NULL AND r.pair_games IS NULL
RETURN DISTINCT uid, t.position
"""
TURN_POSITIONS = """
UNWIND $ids AS id
MATCH (t:Turn {turn_id: id})
RETURN t.user_id, t.position
"""
META_VALUE = "MATCH (m:Meta {key: $key}) RETURN m.value"
USER_WIN_COUNTS = """
UNWIND $uids AS uid
MATCH (u:User {user_id: uid})
WITH uid, u
MATCH (u)-[k:WIN_COUNT]->(m:LLM)
WHERE k.games > 0
RETURN uid, m.llm_id, k.wins, k.games
"""
# The counts as known at each user's bound ($bounds, as above), in one read (one snapshot on FalkorDB): the rated
# answers, with answer and rating times, of the comparisons with an answer known at or after the bound (a rating
# is known from when both it and its answer exist), one row each; then the user's kept counts (USER_WIN_COUNTS),
# one row per LLM with conv and idx null. graphstore.sampler.PastCounts.from_kept takes the comparisons' current
# shares out of the kept counts and their answers known before the bound back in: the counts as known then,
# however long the past before it. The first part still walks each user's rated answers once, to find the touched
# comparisons (their `position`s; a list, then UNWIND, so FalkorDB seeks the index) without collecting any other.
USER_RATED_SINCE_AND_KEPT = """
UNWIND $bounds AS b
MATCH (u:User {user_id: b.uid})
WITH b.uid AS uid, b.since AS since, u
MATCH (u)<-[:BY]-(t:Turn)<-[:ANSWER_OF]-(r:Response)
WHERE r.rating IS NOT NULL AND r.rating_ms IS NOT NULL AND (t.ts >= since OR r.rating_ms >= since)
WITH uid, collect(DISTINCT t.position) AS touched
UNWIND touched AS pos
MATCH (t:Turn {position: pos})
WHERE t.user_id = uid
WITH uid, t
MATCH (t)<-[:ANSWER_OF]-(r:Response)
WHERE r.rating IS NOT NULL AND r.rating_ms IS NOT NULL
RETURN uid, t.conversation_id AS conv, t.turn_index AS idx, t.llm_id AS llm, r.rating AS x, t.ts AS y,
       r.rating_ms AS z
UNION ALL
UNWIND $bounds AS b
MATCH (u:User {user_id: b.uid})
WITH b.uid AS uid, u
MATCH (u)-[k:WIN_COUNT]->(m:LLM)
WHERE k.games > 0
RETURN uid, null AS conv, null AS idx, m.llm_id AS llm, k.wins AS x, k.games AS y, null AS z
"""
# Every rated answer of each user in $uids with its comparison's `position` and the share its last recount kept,
# then the user's kept counts (every WIN_COUNT edge, one row per LLM, pos and rating null), in one read (one
# snapshot on FalkorDB): what graphstore.count_check counts again in the client and compares with.
USER_RATED_SHARES_AND_KEPT = """
UNWIND $uids AS uid
MATCH (u:User {user_id: uid})
WITH uid, u
MATCH (u)<-[:BY]-(t:Turn)<-[:ANSWER_OF]-(r:Response)
WHERE r.rating IS NOT NULL
RETURN uid, t.position AS pos, t.llm_id AS llm, r.rating AS rating, r.pair_wins AS wins, r.pair_games AS games
UNION ALL
UNWIND $uids AS uid
MATCH (u:User {user_id: uid})
WITH uid, u
MATCH (u)-[k:WIN_COUNT]->(m:LLM)
RETURN uid, null AS pos, m.llm_id AS llm, null AS rating, k.wins AS wins, k.games AS games
"""
# Forget the kept counts of each user in $uids, their WIN_COUNT edges and their answers' shares, in one write
# (one transaction; on Neo4j under the user's lock, taken first as RECOUNT_COMPARISONS takes it), so recounting
# every comparison of theirs afterwards rebuilds the counts (GraphStore.rebuild_win_counts). A write's recount in
# between counts its comparison into the new edges and sets its shares, so the rebuild adds nothing for it.
CLEAR_WIN_COUNTS = """
UNWIND $uids AS uid
MATCH (u:User {user_id: uid})
SET u.counts_rev = coalesce(u.counts_rev, 0) + 1
WITH u
OPTIONAL MATCH (u)-[k:WIN_COUNT]->(:LLM)
DELETE k
WITH DISTINCT u
MATCH (u)<-[:BY]-(:Turn)<-[:ANSWER_OF]-(r:Response)
WHERE r.pair_games IS NOT NULL
SET r.pair_wins = null, r.pair_games = null
"""

# The newest $limit rated answers to each query text in $keys, by any user: the crowd evidence of a request
# (trainer/crowd.py centres them per comparison and leaves out the requesting user). Two index seeks, no edge
# traversal: a turn carries its query's key (indexed) and its Response has the turn's id as its key. The
# traversal it replaces, Query -ASKED_IN-> Turn <-ANSWER_OF- Response, fans out from a popular query to all its
# turns, and FalkorDB 4.16 crashed (SIGSEGV in GraphBLAS's matrix product under that traversal) in three long
# reliability runs while routers ran it beside the ingest's writes (bench/results/reliability.md).
QUERY_RATED = """
UNWIND $keys AS qk
MATCH (t:Turn {query_key: qk})
WITH qk, t
MATCH (r:Response {response_id: t.turn_id})
WHERE r.rating IS NOT NULL
WITH qk, t, r
ORDER BY t.ts DESC
WITH qk, collect([t.user_id, t.conversation_id, t.turn_index, t.llm_id, r.rating])[..$limit] AS rated
UNWIND rated AS row
RETURN qk, row[0], row[1], row[2], row[3], row[4]
"""

# Who a turn belongs to and which LLM answered it: the gateway checks feedback against it (a user rates only
# their own turns) and names the LLMs of a pairwise preference.
TURN_OWNERS = """
UNWIND $ids AS id
MATCH (t:Turn {turn_id: id})
RETURN t.turn_id, t.user_id, t.llm_id
"""

QUERY_EMBS = """
UNWIND $keys AS qk
MATCH (q:Query {query_key: qk})
RETURN q.query_key, q.emb
"""

ACTIVE_USERS = """
MATCH (u:User)
WHERE u.last_ms IS NOT NULL AND ($since_ms IS NULL OR u.last_ms >= $since_ms)
RETURN u.user_id, u.last_ms
"""

HISTORY_TURNS = """
MATCH (u:User {user_id: $user_id})
WITH u
MATCH (u)<-[:BY]-(t:Turn)
WITH t
ORDER BY t.ts DESC, t.turn_id DESC
LIMIT $limit
MATCH (q:Query)-[:ASKED_IN]->(t)
OPTIONAL MATCH (r:Response)-[:ANSWER_OF]->(t)
OPTIONAL MATCH (f:Feedback)-[e:RATES]->(r)
RETURN t.turn_id, t.conversation_id, t.turn_index, t.ts, t.llm_id, q.text, r.text, r.rating,
       f.feedback_id, f.kind, f.ts, e.rating, f.turn_id
"""

HISTORY_DECISIONS = """
MATCH (u:User {user_id: $user_id})
WITH u
MATCH (d:Decision)-[:FOR]->(u)
RETURN d.request_id, d.ts, d.chosen_llm_id, d.model_version, d.scores, d.turn_ids, d.latency_ms, d.fallback,
       d.error, d.scorer, d.explain
ORDER BY d.ts DESC
LIMIT $limit
"""

DECISION = """
MATCH (d:Decision {request_id: $request_id})
RETURN d.request_id, d.user_id, d.ts, d.chosen_llm_id, d.model_version, d.scores, d.turn_ids, d.latency_ms,
       d.fallback, d.error, d.scorer, d.explain
"""

DECISION_TURNS = """
MATCH (:Decision {request_id: $request_id})-[:USED]->(t:Turn)
MATCH (q:Query)-[:ASKED_IN]->(t)
OPTIONAL MATCH (r:Response)-[:ANSWER_OF]->(t)
RETURN t.turn_id, t.conversation_id, t.turn_index, t.ts, t.llm_id, q.text, r.text, r.rating
"""

CLEAR = "MATCH (n) DETACH DELETE n"

# --- per-label texts, built from schema names only (never from values) -------------------------------
COUNT: dict[str, str] = {label: f"MATCH (n:{label}) RETURN count(n)" for label in KEYS}
COUNT_REL: dict[str, str] = {rel: f"MATCH ()-[e:{rel}]->() RETURN count(e)"
                             for name, rel in vars(Rel).items() if not name.startswith("_")}

#: Secondary lookups: Turn by position in its conversation (FOLLOWS linking) and by query text (crowd
#: evidence), User by recency (the sampler).
SECONDARY_INDEXES: tuple[tuple[str, str], ...] = ((Label.TURN, "position"), (Label.TURN, "query_key"),
                                                  (Label.USER, "last_ms"))

FALKOR_DDL: tuple[str, ...] = tuple(
    f"CREATE INDEX FOR (n:{label}) ON (n.{prop})" for label, prop in [*KEYS.items(), *SECONDARY_INDEXES])
#: Every (label, property) the schema indexes: the keys (unique on Neo4j) and the secondary lookups.
REQUIRED_INDEXES: tuple[tuple[str, str], ...] = (*KEYS.items(), *SECONDARY_INDEXES)
#: The indexes a server has, one row (label, [properties]) each (`prefstream doctor`).
FALKOR_LIST_INDEXES = "CALL db.indexes() YIELD label, properties RETURN label, properties"
NEO4J_LIST_INDEXES = "SHOW INDEXES YIELD labelsOrTypes, properties RETURN labelsOrTypes[0], properties"

NEO4J_DDL: tuple[str, ...] = (
    *(f"CREATE CONSTRAINT {label.lower()}_key IF NOT EXISTS FOR (n:{label}) REQUIRE n.{prop} IS UNIQUE"
      for label, prop in KEYS.items()),
    *(f"CREATE INDEX {label.lower()}_{prop} IF NOT EXISTS FOR (n:{label}) ON (n.{prop})"
      for label, prop in SECONDARY_INDEXES),
)

ALL: frozenset[str] = frozenset(
    [v for k, v in dict(globals()).items() if k.isupper() and isinstance(v, str)]
    + list(COUNT.values()) + list(COUNT_REL.values()) + list(FALKOR_DDL) + list(NEO4J_DDL))
