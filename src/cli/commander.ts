/**
 * commander, as the CommonJS package it is: the build is CommonJS (see tsconfig.json), so this is
 * a plain `require`, not its ES-module wrapper (half the load time, which a cached re-run of a few
 * dozen milliseconds feels).
 */
export { Command, CommanderError, InvalidArgumentError, Option } from "commander";
