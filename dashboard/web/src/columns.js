// The metric columns a breakdown row can show: API name, answer field, header, formatter.
import { fmt } from './format.js';

export const COLUMNS = {
  visitors: { field: 'visitors', header: 'Visitors', format: fmt.compact },
  visits: { field: 'visits', header: 'Visits', format: fmt.compact },
  views: { field: 'views', header: 'Views', format: fmt.compact },
  events: { field: 'events', header: 'Events', format: fmt.compact },
  bounce_rate: { field: 'bounceRate', header: 'Bounce rate', format: fmt.percent },
  visit_duration: { field: 'avgDuration', header: 'Visit duration', format: fmt.duration },
  time_on_page: { field: 'timeOnPage', header: 'Time on page', format: fmt.duration },
  scroll_depth: { field: 'scrollDepth', header: 'Scroll depth', format: fmt.percent },
  conversions: { field: 'conversions', header: 'Conversions', format: fmt.compact },
  conversion_rate: { field: 'conversionRate', header: 'Conversion rate', format: fmt.percent },
  revenue: { field: 'totalRevenue', header: 'Revenue', format: fmt.money },
  total_revenue: { field: 'totalRevenue', header: 'Revenue', format: fmt.money },
  average_revenue: { field: 'averageRevenue', header: 'Average revenue', format: fmt.money },
};

export const SESSION = ['visitors', 'visits', 'views', 'bounce_rate', 'visit_duration'];
