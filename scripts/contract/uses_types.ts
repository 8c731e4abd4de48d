// Compiled by scripts/contract/run against the types openapi-typescript generates from openapi.json: what an
// application writes with them must type-check (a renamed or dropped field breaks this file).
import type { components, operations } from "./clerk-sync";

type User = components["schemas"]["User"];
type Membership = components["schemas"]["Membership"];
type Change = components["schemas"]["Change"];
type ApiError = components["schemas"]["Error"];
type UserAnswer = operations["getUser"]["responses"][200]["content"]["application/json"];

export function greeting(user: User): string {
    const name: string = user.name ?? user.email ?? user.clerk_id;
    return user.deleted_at === null ? `Hello, ${name}` : `${name} left`;
}

export function isAdmin(membership: Membership): boolean {
    return membership.role === "org:admin";
}

export function describe(change: Change): string {
    const seq: number = change.seq;
    return `${seq} ${change.kind}.${change.op} via ${change.via}`;
}

export function explain(error: ApiError): string {
    return `${error.error}: ${error.message}`;
}

export const sameShape = (answer: UserAnswer): User => answer;
