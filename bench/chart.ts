// Line charts drawn as SVG and rendered to PNG offline (resvg, a prebuilt npm binary, with Debian's
// DejaVu Sans), so the bench's picture needs no browser and no network.
import { Resvg } from '@resvg/resvg-js';

const FONT_FILE = '/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf';
const FONT = 'DejaVu Sans';

export interface Series {
  name: string;
  color: string;
  dashed?: boolean;
  points: ReadonlyArray<readonly [number, number]>;
}

export interface Panel {
  title: string;
  xLabel: string;
  yLabel: string;
  /** log2 spaces 1,2,4,…,64 evenly. */
  xScale: 'log2' | 'linear';
  xTicks: readonly number[];
  /** log10 for values spanning orders of magnitude (ticks at 1, 2, 5 × 10^k). */
  yScale?: 'linear' | 'log10';
  series: readonly Series[];
  /** Shown instead of the plot when there is nothing to draw. */
  message?: string;
}

const PANEL_W = 600;
const PANEL_H = 440;
const MARGIN = { left: 64, right: 20, top: 40, bottom: 118 };

function escapeXml(text: string): string {
  return text.replace(/[<>&"]/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;' })[c]!);
}

function text(x: number, y: number, content: string, attrs = ''): string {
  return `<text x="${x.toFixed(1)}" y="${y.toFixed(1)}" font-family="${FONT}" ${attrs}>${escapeXml(content)}</text>`;
}

/** 1, 2, 5 × 10^k from below min to above max. */
function logTicks(min: number, max: number): number[] {
  const ticks: number[] = [];
  for (let k = Math.floor(Math.log10(min)); ; k++) {
    for (const m of [1, 2, 5]) {
      const v = m * 10 ** k;
      if (v * 2.5 < min) continue;
      ticks.push(v);
      if (v >= max) return ticks;
    }
  }
}

/** 0 to a round number above max, in about five steps of 1, 2 or 5 × 10^k. */
function yTicks(max: number): number[] {
  const raw = Math.max(max, 1) / 5;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * magnitude).find((s) => s >= raw)!;
  const ticks: number[] = [];
  for (let v = 0; v < max + step; v += step) ticks.push(v);
  return ticks;
}

function panel(p: Panel, offsetX: number): string {
  const plotW = PANEL_W - MARGIN.left - MARGIN.right;
  const plotH = PANEL_H - MARGIN.top - MARGIN.bottom;
  const x0 = offsetX + MARGIN.left;
  const y0 = MARGIN.top;
  const parts: string[] = [text(offsetX + PANEL_W / 2, 24, p.title, 'font-size="16" font-weight="bold" text-anchor="middle"')];
  const frame = `<rect x="${x0}" y="${y0}" width="${plotW}" height="${plotH}" fill="none" stroke="#444"/>`;
  if (p.message !== undefined || p.series.every((s) => s.points.length === 0)) {
    parts.push(frame, text(x0 + plotW / 2, y0 + plotH / 2, p.message ?? 'no data', 'font-size="15" text-anchor="middle" fill="#666"'));
    return parts.join('\n');
  }
  const toX = p.xScale === 'log2' ? Math.log2 : (v: number) => v;
  const xMin = toX(Math.min(...p.xTicks));
  const xMax = toX(Math.max(...p.xTicks));
  const ys = p.series.flatMap((s) => s.points.map(([, y]) => y));
  const log = p.yScale === 'log10';
  const ticksY = log ? logTicks(Math.min(...ys), Math.max(...ys)) : yTicks(Math.max(...ys));
  const toY = log ? Math.log10 : (v: number) => v;
  const yMin = log ? toY(ticksY[0]!) : 0;
  const yMax = toY(ticksY[ticksY.length - 1]!);
  const px = (v: number) => x0 + ((toX(v) - xMin) / (xMax - xMin)) * plotW;
  const py = (v: number) => y0 + plotH - ((toY(v) - yMin) / (yMax - yMin)) * plotH;

  for (const t of ticksY) {
    parts.push(`<line x1="${x0}" x2="${x0 + plotW}" y1="${py(t).toFixed(1)}" y2="${py(t).toFixed(1)}" stroke="#ddd"/>`);
    parts.push(text(x0 - 8, py(t) + 4, String(t), 'font-size="12" text-anchor="end"'));
  }
  for (const t of p.xTicks) {
    parts.push(`<line x1="${px(t).toFixed(1)}" x2="${px(t).toFixed(1)}" y1="${y0}" y2="${y0 + plotH}" stroke="#eee"/>`);
    parts.push(text(px(t), y0 + plotH + 18, String(t), 'font-size="12" text-anchor="middle"'));
  }
  parts.push(frame);
  parts.push(text(x0 + plotW / 2, y0 + plotH + 40, p.xLabel, 'font-size="13" text-anchor="middle"'));
  parts.push(text(offsetX + 16, y0 + plotH / 2, p.yLabel, `font-size="13" text-anchor="middle" transform="rotate(-90 ${offsetX + 16} ${y0 + plotH / 2})"`));

  p.series.forEach((s, i) => {
    const path = s.points.map(([x, y], j) => `${j === 0 ? 'M' : 'L'}${px(x).toFixed(1)},${py(y).toFixed(1)}`).join(' ');
    const dash = s.dashed ? ' stroke-dasharray="6 4"' : '';
    parts.push(`<path d="${path}" fill="none" stroke="${s.color}" stroke-width="2.2"${dash}/>`);
    for (const [x, y] of s.points) parts.push(`<circle cx="${px(x).toFixed(1)}" cy="${py(y).toFixed(1)}" r="3" fill="${s.color}"/>`);
    // Legend under the axis label, two columns.
    const lx = x0 + (i % 2) * (plotW / 2);
    const ly = y0 + plotH + 62 + Math.floor(i / 2) * 18;
    parts.push(`<line x1="${lx}" x2="${lx + 26}" y1="${ly - 4}" y2="${ly - 4}" stroke="${s.color}" stroke-width="2.2"${dash}/>`);
    parts.push(text(lx + 32, ly, s.name, 'font-size="12"'));
  });
  return parts.join('\n');
}

export function chartSvg(panels: readonly Panel[], footnote: string): string {
  const width = PANEL_W * panels.length;
  const height = PANEL_H + 24;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    ...panels.map((p, i) => panel(p, i * PANEL_W)),
    text(width / 2, height - 8, footnote, 'font-size="11" text-anchor="middle" fill="#555"'),
    '</svg>',
  ].join('\n');
}

export function renderPng(svg: string): Buffer {
  const resvg = new Resvg(svg, { font: { fontFiles: [FONT_FILE], loadSystemFonts: false, defaultFontFamily: FONT } });
  return resvg.render().asPng();
}
