/** Names of the files a run of elfpatch leaves next to the files it edits (scan and recovery know them). */

/** Undo journals of `--in-place` runs end with this. */
export const UNDO_SUFFIX = ".elfpatch-undo";

/** Temp files: safe-write copies (`.NAME.elfpatch-PID-THREAD-N.tmp`) and journals being written. */
export const STALE_TEMP = /\.elfpatch-\d+-\d+-\d+\.tmp$|\.elfpatch-undo\.\d+-\d+\.tmp$/;
