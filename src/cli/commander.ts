/**
 * commander, loaded as the CommonJS package it is (through `require`): half the load time of its
 * ES-module wrapper, which matters for a CLI whose cached re-run takes a few dozen milliseconds.
 */
import { createRequire } from "node:module";
import type * as Commander from "commander";

const commander = createRequire(import.meta.url)("commander") as typeof Commander;
export const { Command, CommanderError, InvalidArgumentError, Option } = commander;
export type Command = Commander.Command;
