// The node tests, in one process so that they run one after another (on any Node.js from 18
// on): the export test imports the whole project back, which must not race the erasures of
// the others.
import "./errors.js";
import "./memories.js";
import "./jobs.js";
import "./graph.js";
import "./project.js";
