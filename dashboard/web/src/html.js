// JSX-like templates without a compiler: html`<div class=${cls}>${child}</div>`.
import htm from 'htm';
import { h } from 'preact';

export const html = htm.bind(h);
