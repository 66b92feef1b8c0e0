/* lean-events/client: browser-safe reducers (no native code, no Node built-ins). */
import type { EventRecord, FlowState, TriggerState } from '../index.js'

export type { EventRecord, FlowState, TriggerState, StepState } from '../index.js'

/** A new, empty flow state. */
export declare function initialFlowState(): FlowState
/** A new, empty trigger state. */
export declare function initialTriggerState(): TriggerState
/** Reduce a flow's events (oldest first) to its state. */
export declare function reduceFlowState(events: Iterable<EventRecord>): FlowState
/** Reduce a trigger's events (oldest first) to its state. */
export declare function reduceTriggerState(events: Iterable<EventRecord>): TriggerState
/** Fold one event into a flow state (updated in place and returned; undefined: a new one). */
export declare function applyFlowEvent(state: FlowState | undefined, event: EventRecord): FlowState
/** Fold one event into a trigger state (updated in place and returned; undefined: a new one). */
export declare function applyTriggerEvent(state: TriggerState | undefined, event: EventRecord): TriggerState
